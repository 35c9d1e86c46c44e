import CNNCTestSupport
import Foundation
import GraphIR
import LLVMBackend
import Lowering
import Runtime
import SwiftBackend
import Testing

/// One image across the cores: an inference program's large layers are `parallel` statements over a
/// fixed partition, and its results are the same bits with no pool, a pool of one worker or of three,
/// on both back ends and on the host's and a lower target.
@Suite struct ParallelTests {
  /// A Winograd conv and a dense layer each just large enough at batch 1 to split (`Target.parallelWorkBelow`).
  static let source = """
    graph par
    input image: f32[N, 8, 16, 16]
    input label: i32[N]
    conv = conv2d(image, filters: 32, kernel: 3, padding: 1)
    relu = relu(conv)
    pool = maxpool(relu, size: 2)
    flat = flatten(pool)
    fc   = dense(flat, units: 128)
    act  = relu(fc)
    out  = dense(act, units: 10)
    loss = cross_entropy(out, label)
    output out
    minimize loss
    """

  /// The target the programs are lowered for: two cores, whatever this machine has, so the layers split.
  static func target(_ name: String) throws -> Target {
    var t = try TestTargets.resolve(name)
    t.cores = 2
    t.convAlgorithm = .winograd
    return t
  }

  /// The `parallel` statements of a program, at any depth.
  static func parallels(_ body: [Stmt]) -> Int {
    body.reduce(0) { n, s in
      switch s {
      case .parallel(_, _, let b): n + 1 + parallels(b)
      case .loop(_, _, let b), .when(_, let b), .region(_, let b), .kernel(_, let b): n + parallels(b)
      default: n
      }
    }
  }

  /// The program's output after one call with `pool`, as bit patterns.
  static func run(_ entry: EntryPoint, _ p: Program, pool: ThreadPool?) -> [UInt32] {
    var params = (0..<(p.parameterFloats + p.bufferFloats)).map { Float(sin(Double($0) * 0.37)) * 0.05 }
    var arena = [Float](repeating: .nan, count: p.arenaFloats), prepared = [Float](repeating: .nan, count: p.preparedFloats + 1)
    let images = (0..<p.imageFloats).map { Float(cos(Double($0) * 0.21)) }
    images.withUnsafeBufferPointer { img in
      entry(&params, nil, nil, nil, &arena, &prepared, img.baseAddress, nil, 0, 0, 0, pool?.pointer)
    }
    return arena[p.output.offset..<(p.output.offset + p.output.count)].map(\.bitPattern)
  }

  static func check(_ entries: [EntryPoint], _ programs: [Program], _ what: String) {
    let pools = [ThreadPool(workers: 1), ThreadPool(workers: 3)]
    for (entry, p) in zip(entries, programs) {
      let alone = run(entry, p, pool: nil)
      #expect(alone.contains { !Float(bitPattern: $0).isNaN }, "\(what) batch \(p.batch) wrote its output")
      for pool in pools {
        // Repeated: a worker that wakes late must not run a finished job's iterations.
        for _ in 0..<20 { #expect(run(entry, p, pool: pool) == alone, "\(what) batch \(p.batch) with a pool") }
      }
    }
  }

  static func programs(_ name: String) throws -> [Program] {
    let g = try Parser.parse(source, defaultName: "par")
    let t = try target(name)
    let programs = try [1, 3].map { try lower(g, batch: $0, mode: .infer, target: t) }
    for p in programs {
      #expect(parallels(p.functions.flatMap(\.body) + p.sharedKernels.flatMap(\.body)) >= 2, "batch \(p.batch): the conv and the dense layer split")
    }
    let gradients = try lower(g, batch: 2, mode: .gradients, target: t)
    #expect(parallels(gradients.functions.flatMap(\.body)) == 0, "a shard's gradient program splits nothing: its shards use the cores")
    return programs
  }

  @Test(arguments: TestTargets.names) func jitResultsDoNotDependOnThePool(_ name: String) throws {
    let programs = try Self.programs(name)
    var jit = try JITCompiler(target: try Self.target(name))
    Self.check(try jit.compile(programs), programs, "jit on \(name)")
  }

  @Test func swiftResultsDoNotDependOnThePool() throws {
    let programs = try Self.programs("host")
    var swift = try SwiftCompiler(source: "par", target: try Self.target("host"), cacheDirectory: NSTemporaryDirectory() + "cnnc-swift-\(UUID().uuidString)")
    let entries = try swift.compile(programs)
    Self.check(entries, programs, "swift")
    // And the two back ends agree (to rounding: they contract multiply-adds differently).
    var jit = try JITCompiler(target: try Self.target("host"))
    for (a, (b, p)) in zip(try jit.compile(programs), zip(entries, programs)) {
      let x = Self.run(a, p, pool: nil).map(Float.init(bitPattern:)), y = Self.run(b, p, pool: nil).map(Float.init(bitPattern:))
      expectClose(x, y, rtol: 1e-4, atol: 1e-5, "jit and swift at batch \(p.batch)")
    }
  }
}
