import CNNCTestSupport
import Foundation
import Testing

/// Data-parallel training under `mpirun -np 2` (Open MPI over shared memory on this machine).
@Suite(.serialized) struct MPITests {
  static let mpirun: String? = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }

  static func mpi(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try #require(mpirun, "Open MPI (openmpi-bin) must be installed; make deps installs it"))
    p.arguments = ["--oversubscribe", "-np", "2", try #require(CLITests.binary)] + args
    var env = ProcessInfo.processInfo.environment
    // Tests may run as root in CI; Open MPI refuses that unless told it is intended.
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    env["CNNC_CACHE"] = CLITests.cache
    p.environment = env
    p.currentDirectoryURL = Fixtures.root
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
  }

  static func bytes(_ dir: String) throws -> Data {
    try Data(contentsOf: URL(fileURLWithPath: dir + "/weights.safetensors")) + Data(contentsOf: URL(fileURLWithPath: dir + "/optimizer.safetensors"))
  }

  @Test(arguments: ["tiny.graph", "simplecnn.graph"]) func twoRanksMatchTheSingleProcessBitForBit(_ graph: String) throws {
    let tmp = NSTemporaryDirectory() + "cnnc-mpi-\(UUID().uuidString)"
    let r = try Self.mpi(["train", "Graphs/\(graph)", "--jit", "--steps", "25", "--out", tmp + "/a"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stdout.contains("all 2 ranks hold identical weights"))
    #expect(r.stdout.components(separatedBy: "training ").count == 2, "rank 0 alone prints")
    // Run after run, and against one process computing the same two shards of each global batch.
    let again = try Self.mpi(["train", "Graphs/\(graph)", "--jit", "--steps", "25", "--out", tmp + "/b"])
    #expect(again.status == 0)
    let single = try CLITests.run(["train", "Graphs/\(graph)", "--jit", "--steps", "25", "--shards", "2", "--out", tmp + "/c"])
    #expect(single.status == 0)
    #expect(try Self.bytes(tmp + "/a") == Self.bytes(tmp + "/b"))
    #expect(try Self.bytes(tmp + "/a") == Self.bytes(tmp + "/c"))
  }

  @Test func shardsMustSplitOverTheRanks() throws {
    let r = try Self.mpi(["train", "Graphs/tiny.graph", "--jit", "--steps", "5", "--shards", "1", "--out", NSTemporaryDirectory() + "cnnc-mpi-bad"])
    #expect(r.status != 0)
    #expect(r.stderr.contains("MPI ranks need a shard count"))
  }
}
