/// A position in a source file: 1-based line and byte column, plus a length for the caret span.
public struct SourceRange: Equatable, Hashable, Sendable {
  public var line: Int
  public var column: Int
  public var length: Int
  public init(line: Int, column: Int, length: Int = 1) {
    self.line = line
    self.column = column
    self.length = max(1, length)
  }
  /// A range for values the compiler made up (gradients, fused nodes): no source position.
  public static let synthesized = SourceRange(line: 0, column: 0)
}

/// One compiler message, rendered the way clang and swiftc render theirs.
public struct Diagnostic: Equatable, Sendable, Error {
  public enum Severity: String, Sendable { case error, warning, note }
  public var severity: Severity
  public var message: String
  public var range: SourceRange
  /// Notes attached to this message (e.g. "previous definition is here").
  public var notes: [Diagnostic]

  public init(_ severity: Severity, _ message: String, at range: SourceRange, notes: [Diagnostic] = []) {
    self.severity = severity
    self.message = message
    self.range = range
    self.notes = notes
  }

  public static func error(_ message: String, at range: SourceRange, notes: [Diagnostic] = []) -> Diagnostic {
    Diagnostic(.error, message, at: range, notes: notes)
  }
  public static func note(_ message: String, at range: SourceRange) -> Diagnostic {
    Diagnostic(.note, message, at: range)
  }
}

/// Every error found in one run, in source order; thrown by the front end and the passes.
public struct DiagnosticList: Error, Equatable, Sendable {
  public var diagnostics: [Diagnostic]
  public init(_ diagnostics: [Diagnostic]) { self.diagnostics = diagnostics }

  /// Renders all messages as `file:line:col: error: ...` with the source line and a caret span.
  public func render(file: String, source: [UInt8]) -> String {
    let lines = SourceLines(source)
    var out = ""
    for d in diagnostics {
      out += Self.render(d, file: file, lines: lines)
      for n in d.notes { out += Self.render(n, file: file, lines: lines) }
    }
    return out
  }

  private static func render(_ d: Diagnostic, file: String, lines: SourceLines) -> String {
    guard d.range.line > 0 else { return "\(file): \(d.severity.rawValue): \(d.message)\n" }
    var out = "\(file):\(d.range.line):\(d.range.column): \(d.severity.rawValue): \(d.message)\n"
    let text = lines.line(d.range.line)
    out += text + "\n"
    // The caret line copies tabs from the source so the caret lands under the right byte.
    let prefix = text.utf8.prefix(max(0, d.range.column - 1)).map { $0 == 9 ? "\t" : " " }.joined()
    let room = max(1, text.utf8.count - (d.range.column - 1))
    out += prefix + "^" + String(repeating: "~", count: max(0, min(d.range.length, room) - 1)) + "\n"
    return out
  }
}

/// Splits a source buffer into lines (bytes, lossily decoded for display only).
struct SourceLines {
  private let lines: [String]
  init(_ source: [UInt8]) {
    var result: [String] = []
    var start = 0
    for (i, b) in source.enumerated() where b == 10 {
      result.append(Self.decode(source[start..<i]))
      start = i + 1
    }
    result.append(Self.decode(source[start...]))
    lines = result
  }
  private static func decode(_ bytes: ArraySlice<UInt8>) -> String {
    var s = String(decoding: bytes, as: UTF8.self)
    if s.hasSuffix("\r") { s.removeLast() }
    // Very long lines are cut so one pathological line cannot flood the terminal.
    if s.utf8.count > 400 { s = String(decoding: Array(s.utf8.prefix(400)), as: UTF8.self) + "..." }
    return s
  }
  func line(_ n: Int) -> String { n >= 1 && n <= lines.count ? lines[n - 1] : "" }
}

/// Edit distance for "did you mean" suggestions (optimal string alignment: a swap of two neighbours,
/// "rleu", counts as one edit), in three rolling rows.
public func editDistance(_ a: String, _ b: String) -> Int {
  let a = Array(a.utf8), b = Array(b.utf8)
  if a.isEmpty { return b.count }
  if b.isEmpty { return a.count }
  var before = [Int](repeating: 0, count: b.count + 1)
  var previous = Array(0...b.count)
  var row = [Int](repeating: 0, count: b.count + 1)
  for i in 1...a.count {
    row[0] = i
    for j in 1...b.count {
      row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
      if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { row[j] = min(row[j], before[j - 2] + 1) }
    }
    (before, previous, row) = (previous, row, before)
  }
  return previous[b.count]
}

/// The closest candidate within a distance that scales with the word's length, if any.
public func closestMatch(_ word: String, in candidates: [String]) -> String? {
  guard word.utf8.count <= 64 else { return nil }
  let limit = max(1, min(3, word.utf8.count / 3))
  let lowered = word.lowercased()
  var best: (String, Int)?
  // The length difference bounds the distance from below, so most candidates cost no distance at all.
  for c in candidates where abs(c.utf8.count - word.utf8.count) <= limit {
    let d = editDistance(lowered, c.lowercased())
    if d <= limit, best == nil || d < best!.1 { best = (c, d) }
  }
  return best?.0
}
