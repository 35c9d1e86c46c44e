import CNNCTestSupport
import FileSystem
import Foundation
import LLVMBackend
import Lowering
import Runtime
import Testing

/// The JIT's object cache: a compile that finds its modules in the cache runs exactly the code of one that
/// compiled them; entries that are damaged, truncated or for other code are misses and are written anew;
/// the cache keeps at most its bound of entries; one that cannot be written changes nothing but speed.
@Suite struct ObjectCacheTests {
  static func program(_ graph: String = "tiny.graph", target: Target = .host()) throws -> Program {
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent(graph))
    return try lower(g, batch: 4, mode: .train(OptimizerSpec(kind: .adam)), target: target)
  }

  static func directory() -> URL {
    URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("cnnc-object-cache-\(UUID().uuidString)")
  }

  static func entries(_ dir: URL) throws -> [URL] {
    try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil).filter { $0.pathExtension == "o" }
      .sorted { $0.path < $1.path }
  }

  @Test func sha256GivesTheStandardDigests() {
    func hex(_ chunks: [[UInt8]]) -> String {
      var h = SHA256()
      for c in chunks { h.update(c) }
      return h.finalize().map { String(format: "%02x", $0) }.joined()
    }
    #expect(hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(hex([Array("abc".utf8)]) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    let two = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
    #expect(hex([two]) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    // The same bytes in pieces that straddle a block boundary.
    let long = two + two
    #expect(hex([Array(long[..<3]), Array(long[3..<63]), Array(long[63..<100]), Array(long[100...])]) == hex([long]))
    #expect(hex([[UInt8](repeating: 0x61, count: 1_000_000)]) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
  }

  @Test func cachedObjectCodeRunsExactlyAsCompiled() throws {
    let dir = Self.directory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let p = try Self.program()
    var plain = try JITCompiler(target: p.target)
    let expected = KernelPassTests.step(try plain.compile([p])[0], p)
    var first = try JITCompiler(target: p.target, cache: ObjectCache(directory: dir))
    #expect(KernelPassTests.step(try first.compile([p])[0], p) == expected)
    #expect(first.modulesFromCache == 0 && first.modulesCompiled > 0)
    #expect(try Self.entries(dir).count == first.modulesCompiled)
    var second = try JITCompiler(target: p.target, cache: ObjectCache(directory: dir))
    #expect(KernelPassTests.step(try second.compile([p])[0], p) == expected)
    #expect(second.modulesFromCache == second.modulesCompiled, "every module from the cache")
  }

  @Test func damagedEntriesAreRecompiledAndRewritten() throws {
    let dir = Self.directory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let p = try Self.program("simplecnn.graph")
    var plain = try JITCompiler(target: p.target, compileThreads: 3)
    let expected = KernelPassTests.step(try plain.compile([p])[0], p)
    var fill = try JITCompiler(target: p.target, compileThreads: 3, cache: ObjectCache(directory: dir))
    _ = try fill.compile([p])
    let files = try Self.entries(dir)
    try #require(files.count == 3)
    // One truncated, one with a byte of its object code changed, one not an entry at all.
    let whole = try Data(contentsOf: files[0])
    try whole.prefix(whole.count / 2).write(to: files[0])
    var flipped = [UInt8](try Data(contentsOf: files[1]))
    flipped[flipped.count - 100] ^= 0x40
    try Data(flipped).write(to: files[1])
    try Data("not an object".utf8).write(to: files[2])
    var again = try JITCompiler(target: p.target, compileThreads: 3, cache: ObjectCache(directory: dir))
    #expect(KernelPassTests.step(try again.compile([p])[0], p) == expected)
    #expect(again.modulesFromCache == 0, "a damaged entry was used")
    var last = try JITCompiler(target: p.target, compileThreads: 3, cache: ObjectCache(directory: dir))
    #expect(KernelPassTests.step(try last.compile([p])[0], p) == expected)
    #expect(last.modulesFromCache == 3, "the entries were written anew")
  }

  @Test func keysNameTheCodeAndTheTarget() throws {
    // Keys are made, nothing is run: fixed targets, whatever this machine is.
    let (avx2, avx512) = (try TargetTests.target("x86-64-v3"), try TargetTests.target("x86-64-v4"))
    func keys(_ p: Program) -> [String] {
      LLVMRenderer.render([p], moduleName: "cnnc", partitions: 2).map { ObjectCache.key($0, target: p.target, pipeline: Module.pipeline) }
    }
    let host = try Self.program("simplecnn.graph", target: avx2), again = try Self.program("simplecnn.graph", target: avx2)
    #expect(keys(host) == keys(again), "the same program, the same keys")
    #expect(Set(keys(host)).count == 2, "two modules, two keys")
    #expect(Set(keys(host)).isDisjoint(with: keys(try Self.program("simplecnn.graph", target: avx512))), "another target")
    #expect(Set(keys(host)).isDisjoint(with: keys(try Self.program("lenet5.graph", target: avx2))), "another graph")
    // The same code for a CPU of the same vector width still has a key of its own.
    var zen3 = try TargetTests.target("znver3")
    zen3.l1 = avx2.l1; zen3.l2 = avx2.l2; zen3.l3 = avx2.l3; zen3.cores = avx2.cores
    let module = LLVMRenderer.render([host], moduleName: "cnnc", partitions: 1)[0]
    #expect(ObjectCache.key(module, target: zen3, pipeline: Module.pipeline) != ObjectCache.key(module, target: avx2, pipeline: Module.pipeline))
    #expect(ObjectCache.key(module, target: host.target, pipeline: "default<O2>") != ObjectCache.key(module, target: host.target, pipeline: Module.pipeline))
  }

  @Test func theLeastRecentlyUsedEntriesGo() throws {
    let dir = Self.directory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let cache = ObjectCache(directory: dir, maxEntries: 2)
    let programs = try ["tiny.graph", "mlp.graph", "lenet5.graph"].map { try Self.program($0) }
    var keys: [String] = []
    for (i, p) in programs.enumerated() {
      var jit = try JITCompiler(target: p.target, compileThreads: 1, cache: cache)
      _ = try jit.compile([p])
      keys.append(ObjectCache.key(LLVMRenderer.render([p], moduleName: "cnnc", partitions: 1)[0], target: p.target, pipeline: Module.pipeline))
      if i == 1 {
        // The first entry is used again: the second is now the least recently used.
        Thread.sleep(forTimeInterval: 0.02)
        #expect(cache.load(keys[0]) != nil)
        Thread.sleep(forTimeInterval: 0.02)
      }
    }
    #expect(try Self.entries(dir).map { $0.deletingPathExtension().lastPathComponent }.sorted() == [keys[0], keys[2]].sorted())
  }

  @Test func aCacheThatCannotBeWrittenOnlyCostsSpeed() throws {
    let file = Self.directory()
    defer { try? FileManager.default.removeItem(at: file) }
    // A plain file where the directory should be: nothing can be created under it.
    try Data("x".utf8).write(to: file)
    let p = try Self.program()
    var plain = try JITCompiler(target: p.target)
    var jit = try JITCompiler(target: p.target, cache: ObjectCache(directory: file.appendingPathComponent("objects")))
    #expect(KernelPassTests.step(try jit.compile([p])[0], p) == KernelPassTests.step(try plain.compile([p])[0], p))
    #expect(jit.modulesFromCache == 0)
  }
}
