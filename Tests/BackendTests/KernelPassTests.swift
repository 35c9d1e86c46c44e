import COpenBLAS
import CNNCTestSupport
import Foundation
import LLVMBackend
import GraphIR
import Lowering
import Runtime
import SwiftBackend
import Testing

/// The kernel-IR passes change no bit: a training step of their output, rendered by the LLVM back end,
/// gives exactly the weights, optimiser state and activations of the program without them, on every target
/// this machine runs. The elementwise-loop vectoriser (run for the Swift back end; the LLVM back end then
/// renders every vector form it makes) and kernel sharing (one function for equal layers).
@Suite struct KernelPassTests {
  /// Four equal convolutions (and their gradients) share kernels; two of another width do not join them.
  static let chain = """
    input image: f32[N, 1, 8, 8]
    input label: i32[N]
    c0 = conv2d(image, filters: 4, kernel: 3, padding: 1)
    c1 = conv2d(c0, filters: 4, kernel: 3, padding: 1)
    c2 = conv2d(c1, filters: 4, kernel: 3, padding: 1)
    c3 = conv2d(c2, filters: 4, kernel: 3, padding: 1)
    r3 = relu(c3)
    c4 = conv2d(r3, filters: 4, kernel: 3, padding: 1)
    c5 = conv2d(c4, filters: 6, kernel: 3, padding: 1)
    c6 = conv2d(c5, filters: 6, kernel: 3, padding: 1)
    f = flatten(c6)
    fc = dense(f, units: 10)
    loss = cross_entropy(fc, label)
    output fc
    minimize loss
    """

  @Test(arguments: TestTargets.names)
  func sharedKernelsAreBitIdentical(_ target: String) throws {
    let g = try Parser.parse(Self.chain, defaultName: "chain")
    let t = try TestTargets.resolve(target)
    let plain = try lower(g, batch: 4, mode: .train(OptimizerSpec(kind: .adam)), target: t, share: false)
    let shared = try lower(g, batch: 4, mode: .train(OptimizerSpec(kind: .adam)), target: t)
    #expect(plain.sharedKernels.isEmpty && shared.sharedKernels.count >= 3, "\(shared.sharedKernels.map(\.name))")
    var jit = try JITCompiler(target: t)
    let results = try [plain, shared].map { Self.step(try jit.compile([$0])[0], plain) }
    #expect(results[0].params == results[1].params, "weights after the step")
    #expect(results[0].m == results[1].m && results[0].v == results[1].v, "Adam's moments")
    #expect(results[0].arena == results[1].arena, "activations and gradients")
  }

  @Test(arguments: ["simplecnn.graph", "bncnn.graph", "residual.graph"], TestTargets.names)
  func vectorizedTrainingStepIsBitIdentical(_ graph: String, _ target: String) throws {
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent(graph))
    let scalar = try lower(g, batch: 4, mode: .train(OptimizerSpec(kind: .adam)), target: try TestTargets.resolve(target))
    let vector = vectorizeElementwiseLoops(scalar)
    #expect(vector != scalar, "nothing was vectorised")
    // Two compiles: the programs' functions have the same names.
    var jit = try JITCompiler(target: scalar.target)
    let results = try [scalar, vector].map { Self.step(try jit.compile([$0])[0], scalar) }
    #expect(results[0].params == results[1].params, "weights after the step")
    #expect(results[0].m == results[1].m && results[0].v == results[1].v, "Adam's moments")
    #expect(results[0].arena == results[1].arena, "activations and gradients")
  }

  /// The Swift back end renders shared kernels and their calls: its step of the shared program matches
  /// the JIT's of the plain one (to rounding: the back ends contract multiply-adds differently).
  @Test func swiftBackendRunsSharedKernels() throws {
    let g = try Parser.parse(Self.chain, defaultName: "chain")
    let plain = try lower(g, batch: 4, mode: .train(OptimizerSpec(kind: .adam)), target: .host(), share: false)
    let shared = try lower(g, batch: 4, mode: .train(OptimizerSpec(kind: .adam)), target: .host())
    var jit = try JITCompiler(target: .host())
    var swift = try SwiftCompiler(source: "chain", target: .host(), cacheDirectory: NSTemporaryDirectory() + "cnnc-swift-\(UUID().uuidString)")
    let a = Self.step(try jit.compile([plain])[0], plain), b = Self.step(try swift.compile([shared])[0], plain)
    func floats(_ bits: [UInt32]) -> [Float] { bits.map(Float.init(bitPattern:)) }
    expectClose(floats(a.params), floats(b.params), rtol: 1e-4, atol: 1e-6, "weights after the step")
    expectClose(floats(a.arena), floats(b.arena), rtol: 1e-3, atol: 1e-5, "activations and gradients")
  }

  /// Self-contained programs (objects for other machines) call no library: every GEMM is a generated
  /// kernel, and a training step matches the library-calling program's to rounding.
  @Test(arguments: ["simplecnn.graph", "mlp.graph"])
  func selfContainedProgramsCallNoLibrary(_ graph: String) throws {
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent(graph))
    var t = Target.host()
    t.selfContained = true
    func gemms(_ body: [Stmt]) -> Int {
      body.reduce(0) { n, s in
        switch s {
        case .gemm: n + 1
        case .loop(_, _, let b), .when(_, let b), .region(_, let b), .kernel(_, let b): n + gemms(b)
        default: n
        }
      }
    }
    let library = try lower(g, batch: 8, mode: .train(OptimizerSpec(kind: .adam)), target: .host())
    let programs = try [lower(g, batch: 8, mode: .train(OptimizerSpec(kind: .adam)), target: t), lower(g, batch: 1, mode: .infer, target: t),
                        lower(g, batch: 8, mode: .infer, target: t)]
    for p in programs { #expect(gemms(p.functions.flatMap(\.body) + p.sharedKernels.flatMap(\.body)) == 0, "\(p.functions[0].name)") }
    #expect(gemms(library.functions.flatMap(\.body)) > 0, "the host program calls the library (else this test checks nothing)")
    var jit = try JITCompiler(target: .host())
    let a = Self.step(try jit.compile([library])[0], library), b = Self.step(try jit.compile([programs[0]])[0], library)
    func floats(_ bits: [UInt32]) -> [Float] { bits.map(Float.init(bitPattern:)) }
    // Adam's first moment after one step is the gradient times 1 - beta1. The weights are not compared:
    // the first step moves each by lr * g / (|g| + eps), so a gradient within rounding of zero can move
    // either way, and which way depends on the library's summation order.
    expectClose(floats(a.m), floats(b.m), rtol: 1e-4, atol: 1e-6, "gradients of a step")
  }

  /// One training step from fixed inputs: the buffers afterwards, bit patterns.
  static func step(_ entry: EntryPoint, _ p: Program) -> (params: [UInt32], m: [UInt32], v: [UInt32], arena: [UInt32]) {
    // One BLAS thread, as every compiled back end runs it: a multithreaded sgemm sums in another order, and a
    // test that compares bits must not depend on whether another test has set the count yet.
    openblas_set_num_threads(1)
    var params = (0..<(p.parameterFloats + p.bufferFloats)).map { Float(sin(Double($0) * 0.7)) * 0.1 }
    var grads = [Float](repeating: 0, count: max(1, p.parameterFloats))
    var m = [Float](repeating: 0, count: max(1, p.parameterFloats)), v = m
    var arena = [Float](repeating: 0, count: max(1, p.arenaFloats))
    let images = (0..<p.imageFloats).map { Float(cos(Double($0) * 0.13)) }
    let labels = (0..<p.batch).map { Int32($0 % p.classes) }
    params.withUnsafeMutableBufferPointer { pp in
      grads.withUnsafeMutableBufferPointer { gp in
        m.withUnsafeMutableBufferPointer { mp in
          v.withUnsafeMutableBufferPointer { vp in
            arena.withUnsafeMutableBufferPointer { ap in
              entry(pp.baseAddress, gp.baseAddress, mp.baseAddress, vp.baseAddress, ap.baseAddress, nil, images, labels, 1e-3, 1, 7, nil)
            }
          }
        }
      }
    }
    return (params.map(\.bitPattern), m.map(\.bitPattern), v.map(\.bitPattern), arena.map(\.bitPattern))
  }
}
