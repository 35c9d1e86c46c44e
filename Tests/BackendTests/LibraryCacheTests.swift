import CNNCTestSupport
import FileSystem
import Foundation
import GraphIR
import LLVMBackend
import Lowering
import Runtime
import SwiftBackend
import Testing

/// The compile caches are untrusted input: a damaged library is compiled again (never loaded), a cache that cannot
/// be used costs the compile only, and a cache directory others can write is not used.
@Suite(.serialized) struct LibraryCacheTests {
  /// The library file of the one program compiled into `dir`.
  static func library(_ dir: String) throws -> String {
    let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".so") }
    try #require(names.count == 1, "\(names)")
    return Path.join(dir, names[0])
  }

  @Test func damagedLibrariesAreCompiledAgainAndUnusableCachesCostTheCompileOnly() throws {
    let dir = try makeTemporaryDirectory(prefix: "cnnc-library-cache")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let p = try ObjectCacheTests.program()
    var first = try SwiftCompiler(source: "tiny", target: .host(), cacheDirectory: dir)
    let expected = KernelPassTests.step(try first.compile([p])[0], p)
    #expect(first.cacheHits == 0)
    var hit = try SwiftCompiler(source: "tiny", target: .host(), cacheDirectory: dir)
    #expect(KernelPassTests.step(try hit.compile([p])[0], p) == expected)
    #expect(hit.cacheHits == 1)
    let lib = try Self.library(dir)
    let whole = try readRegularFile(lib, maxBytes: 1 << 30)
    // Truncated (a loader would fault on it), empty, one byte changed: each is compiled again and runs as before.
    for damaged in [Array(whole.prefix(whole.count / 2)), [], whole.enumerated().map { $0.offset == whole.count / 3 ? $0.element ^ 1 : $0.element }] {
      try writeAtomically(damaged, to: lib)
      var again = try SwiftCompiler(source: "tiny", target: .host(), cacheDirectory: dir)
      #expect(KernelPassTests.step(try again.compile([p])[0], p) == expected)
      #expect(again.cacheHits == 0 && again.compileSeconds > 0)
    }
    // A cache that cannot be created (its parent is a file) compiles in a private temporary directory instead.
    try writeAtomically([1], to: Path.join(dir, "file"))
    var unusable = try SwiftCompiler(source: "tiny", target: .host(), cacheDirectory: Path.join(dir, "file/cache"))
    #expect(KernelPassTests.step(try unusable.compile([p])[0], p) == expected)
  }

  @Test func anObjectCacheOthersCanWriteIsNotUsed() throws {
    let dir = try makeTemporaryDirectory(prefix: "cnnc-object-cache-mode")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let objects = Path.join(dir, "objects")
    #expect(ObjectCache(directory: URL(fileURLWithPath: objects)).refusal == nil)
    #expect(fileStatus(objects)!.st_mode & 0o777 == 0o700, "created private")
    chmod(objects, 0o777)
    let open = ObjectCache(directory: URL(fileURLWithPath: objects))
    #expect(open.refusal?.contains("can be written by other users") == true)
    // Nothing is read from it or written to it.
    let p = try ObjectCacheTests.program()
    var jit = try JITCompiler(target: p.target, cache: open)
    _ = try jit.compile([p])
    #expect(jit.modulesFromCache == 0)
    #expect(try ObjectCacheTests.entries(URL(fileURLWithPath: objects)).isEmpty)
  }
}
