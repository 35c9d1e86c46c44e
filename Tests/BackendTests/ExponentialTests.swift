import CNNCTestSupport
import Foundation
import GraphIR
import LLVMBackend
import Runtime
import Testing

/// The LLVM back end's inline exponential (`LLVMRenderer.exponential`) through the ops that use it, against
/// double-precision formulas: sigmoid over the whole float range that matters, tanh, and the edges (0 and 1 far
/// out, NaN kept), on every target the host runs.
struct ExponentialTests {
  static let graph = """
    input x: f32[N, 2048]
    input y: i32[N]
    s = sigmoid(x)
    t = tanh(x)
    o = add(s, t)
    loss = cross_entropy(o, y)
    output o
    minimize loss
    """

  @Test(arguments: TestTargets.names) func sigmoidAndTanhAreWithinAFewUlpOfTheDoubleFormulas(_ target: String) throws {
    let g = try Parser.parse(Self.graph, defaultName: "exp")
    // The output is s + t: compared with the sum of the double formulas, relative to the terms' sizes.
    let inputs: [Float] = (0..<2048).map { i in
      let u = Float(i) / 2047 * 2 - 1
      return u * u * u * 100  // dense near 0, reaching -100 and 100
    }
    let b = try CompiledBackend(inferenceOf: g, compiler: try JITCompiler(target: try TestTargets.resolve(target)), inferenceCalls: [1])
    let out = try b.infer(images: inputs, count: 1)
    var worst = 0.0
    for (x, y) in zip(inputs, out) {
      let d = Double(x), s = 1 / (1 + Foundation.exp(-d)), t = Foundation.tanh(d)
      let expected = s + t
      // Relative to each term's size, so a cancellation in the sum is not counted as error.
      worst = max(worst, abs(Double(y) - expected) / max(abs(s) + abs(t), 1e-30))
    }
    #expect(worst < 4 * Double(Float.ulpOfOne), "worst relative error \(worst) on \(target)")
    let edges = try b.infer(images: [-1000, -90, 90, 1000, .nan] + [Float](repeating: 0, count: 2043), count: 1)
    #expect(edges[0] == -1 && edges[1] == -1 && edges[2] == 2 && edges[3] == 2 && edges[4].isNaN, "\(edges.prefix(5))")
  }
}
