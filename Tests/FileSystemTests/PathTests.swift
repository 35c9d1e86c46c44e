import FileSystem
import Foundation
import Testing

/// Path arithmetic on the edge cases that used to trap: empty, one-character, root, trailing and doubled slashes.
struct PathTests {
  @Test func parents() {
    let cases: [(String, String)] = [("", "."), ("a", "."), ("/", "/"), ("a/", "."), ("./a", "."), ("../a", ".."), ("//a", "/"),
                                     ("a/b", "a"), ("a/b/", "a"), ("a//b", "a"), ("/a/b", "/a"), ("r", "."), (".", "."), ("é/ü", "é")]
    for (path, parent) in cases { #expect(Path.parent(path) == parent, "parent of '\(path)'") }
  }

  @Test func lastComponents() {
    let cases: [(String, String)] = [("", ""), ("a", "a"), ("/", "/"), ("a/", "a"), ("./a", "a"), ("../a", "a"), ("//a", "a"), ("a/b.graph", "b.graph")]
    for (path, last) in cases { #expect(Path.lastComponent(path) == last, "last component of '\(path)'") }
  }

  @Test func joins() {
    #expect(Path.join("a", "b") == "a/b")
    #expect(Path.join("a/", "b") == "a/b")
    #expect(Path.join("", "b") == "b")
    #expect(Path.join("/", "b") == "/b")
    #expect(Path.join("a", "/b") == "/b")
    #expect(Path.join("a", "") == "a")
  }

  @Test func extensions() {
    let cases: [(String, String, String)] = [("a/b.graph", "a/b", "graph"), ("a.d/b", "a.d/b", ""), (".hidden", ".hidden", ""), ("x.", "x", ""),
                                             ("", "", ""), ("a", "a", ""), ("/", "/", ""), ("m.onnx/", "m", "onnx"), ("e", "e", "")]
    for (path, stripped, ext) in cases {
      #expect(Path.deletingExtension(path) == stripped, "'\(path)' without its extension")
      #expect(Path.extension(path) == ext, "extension of '\(path)'")
    }
    #expect(Path.stem("dir/model.onnx") == "model")
  }

  @Test func directoryNames() {
    for p in ["a/", ".", "..", "a/.", "/", "x/.."] { #expect(Path.namesDirectory(p), "'\(p)'") }
    for p in ["a", "", "a/b", "./a"] { #expect(!Path.namesDirectory(p), "'\(p)'") }
  }
}

/// The checked reader and writers: kinds, ranges, private directories.
struct FilesTests {
  let dir: String
  init() throws { dir = try makeTemporaryDirectory(prefix: "cnnc-files-test") }

  @Test func refusesWhatIsNotARegularFile() throws {
    let fifo = Path.join(dir, "fifo")
    #expect(mkfifo(fifo, 0o600) == 0)
    for (path, kind) in [(fifo, "a FIFO"), (dir, "a directory"), ("/dev/null", "a device")] {
      #expect { _ = try readRegularFile(path, maxBytes: 10) } throws: { "\($0)".contains(kind) }
    }
    #expect { _ = try readRegularFile(Path.join(dir, "missing"), maxBytes: 10) } throws: { "\($0)".contains("No such file") }
  }

  @Test func rangesAreCheckedBeforeReading() throws {
    let file = Path.join(dir, "data")
    try writeAtomically([1, 2, 3, 4], to: file)
    let f = try RegularFile(file)
    #expect(try f.read(offset: 1, count: 2) == [2, 3])
    #expect(try f.read(offset: 4, count: 0) == [])
    for (offset, count) in [(5, 0), (3, 2), (-1, 1), (Int.max, 1), (0, Int.max)] {
      #expect(throws: FileError.self, "\(offset) \(count)") { _ = try f.read(offset: offset, count: count) }
    }
    #expect(throws: FileError.self) { _ = try readRegularFile(file, maxBytes: 3) }
  }

  @Test func writesRefuseDirectoryNames() throws {
    for p in [dir + "/", dir, "."] {
      #expect { try writeAtomically([1], to: p) } throws: { "\($0)".contains("names a directory") }
    }
    // A one-letter name in the working directory's sense: relative to `dir`.
    let one = Path.join(dir, "r")
    try writeAtomically([7], to: one)
    #expect(try readRegularFile(one, maxBytes: 1) == [7])
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["r"])
  }

  /// A device named as an output is written into, not replaced by a regular file (as a rename over it would).
  @Test func writingToADeviceKeepsTheDevice() throws {
    guard let before = fileStatus("/dev/null"), before.st_mode & S_IFMT == S_IFCHR else { return }
    try writeAtomically([1, 2, 3], to: "/dev/null")
    #expect(fileStatus("/dev/null").map { $0.st_mode & S_IFMT == S_IFCHR } == true, "/dev/null is still a device")
    #expect(try FileManager.default.contentsOfDirectory(atPath: "/dev").filter { $0.hasPrefix(".null.tmp") }.isEmpty)
  }

  @Test func privateDirectories() throws {
    let mine = Path.join(dir, "cache/objects")
    #expect(try preparePrivateDirectory(mine) == nil)
    #expect(fileStatus(mine)!.st_mode & 0o777 == 0o700)
    chmod(mine, 0o777)
    #expect(try preparePrivateDirectory(mine)?.contains("can be written by other users") == true)
    let t = try makeTemporaryDirectory(prefix: "cnnc-private")
    #expect(fileStatus(t)!.st_mode & 0o777 == 0o700)
    #expect(t != (try makeTemporaryDirectory(prefix: "cnnc-private")))
  }

  @Test func insideFollowsLinks() throws {
    let inner = Path.join(dir, "m")
    try makeDirectory(inner)
    try writeAtomically([1], to: Path.join(inner, "w.data"))
    #expect(isInside(Path.join(inner, "w.data"), directory: inner))
    #expect(symlink("/dev/zero", Path.join(inner, "zero")) == 0)
    #expect(!isInside(Path.join(inner, "zero"), directory: inner))
    #expect(!isInside(Path.join(inner, "missing"), directory: inner))
  }
}
