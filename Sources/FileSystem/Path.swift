/// Path arithmetic on strings, as POSIX reads paths: components are separated by one or more slashes, a
/// trailing slash names the same file as the path without it, and a path without a slash is in ".".
///
/// Written here rather than taken from the platform's string path helpers, which trap on some one-character
/// paths on Linux; every function is total (any string in, a string out) and tested on the edge cases.
public enum Path {
  /// The directory holding `path`: "." for a bare name (and for ""), "/" for "/" and for a file in "/".
  public static func parent(_ path: String) -> String {
    let p = trimmingTrailingSlashes(path)
    if p == "/" { return "/" }
    guard let slash = p.lastIndex(of: "/") else { return "." }
    let head = trimmingTrailingSlashes(String(p[..<slash]))
    return head.isEmpty ? "/" : head
  }

  /// The last component: "b" for "a/b" and "a/b/", "/" for "/", "" for "".
  public static func lastComponent(_ path: String) -> String {
    let p = trimmingTrailingSlashes(path)
    if p == "/" { return "/" }
    guard let slash = p.lastIndex(of: "/") else { return p }
    return String(p[p.index(after: slash)...])
  }

  /// `name` inside `directory`; an absolute `name` stands alone, and an empty directory adds nothing.
  public static func join(_ directory: String, _ name: String) -> String {
    if name.hasPrefix("/") || directory.isEmpty { return name }
    if name.isEmpty { return directory }
    return directory.hasSuffix("/") ? directory + name : directory + "/" + name
  }

  /// The extension of the last component without its dot ("graph" for "a/b.graph"); "" for none, and for a
  /// name whose only dot leads it (".hidden").
  public static func `extension`(_ path: String) -> String {
    let name = lastComponent(path)
    guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return "" }
    return String(name[name.index(after: dot)...])
  }

  /// `path` without the extension of its last component ("a/b" for "a/b.graph"; "a.d/b" and ".hidden" stay).
  public static func deletingExtension(_ path: String) -> String {
    let name = lastComponent(path)
    guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return path }
    return String(trimmingTrailingSlashes(path).dropLast(name.distance(from: dot, to: name.endIndex)))
  }

  /// The last component without its extension ("b" for "a/b.graph").
  public static func stem(_ path: String) -> String { deletingExtension(lastComponent(path)) }

  /// Whether the path ends in a slash after a name, so that it can only name a directory ("out/").
  public static func namesDirectory(_ path: String) -> Bool {
    path.hasSuffix("/") || [".", ".."].contains(lastComponent(path))
  }

  /// `path` without trailing slashes, except that "/" (and "//", ...) stays "/".
  static func trimmingTrailingSlashes(_ path: String) -> String {
    var p = Substring(path)
    while p.count > 1, p.hasSuffix("/") { p = p.dropLast() }
    return String(p)
  }
}
