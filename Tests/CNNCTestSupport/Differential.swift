import GraphIR
import Passes
import Runtime
import Testing

/// Checks a compiled back end against the reference interpreter on seeded random data.
public struct Differential {
  public let graph: Graph
  public let batch: Int
  public let parameters: Parameters
  public let images: [Float]
  public let labels: [Int32]
  public let classes: Int

  public init(source: String, batch: Int, seed: UInt64 = 3) throws {
    graph = try Parser.parse(source, defaultName: "diff")
    self.batch = batch
    let shapes = try inferShapes(graph, batch: batch)
    parameters = Parameters(graph: graph, shapes: shapes, seed: seed)
    var rng = SeededRandom(seed: seed, stream: 77)
    let image = graph.inputs.first { $0.dtype == .f32 }!.name
    images = (0..<shapes[image]!.count).map { _ in rng.uniform(-1.5, 1.5) }
    let k = shapes[graph.output!]!.dims.last!
    classes = k
    labels = (0..<batch).map { _ in Int32(rng.next() % UInt64(k)) }
  }

  /// The interpreter's loss, logits and gradients at `step` (dropout keyed by seed 11); with `bf16Products`, the
  /// conv and dense products' operands rounded as a bf16 program's GEMMs round them.
  public func reference(step: Int = 1, bf16Products: Bool = false) throws -> (loss: Float, logits: [Float], gradients: [String: [Float]]) {
    try reference(Float.self, step: step, bf16Products: bf16Products) { $0 }
  }

  /// The same, computed in `T` from this data (the Double reference) and returned as Float.
  public func reference<T: Real>(_ type: T.Type, step: Int = 1, bf16Products: Bool = false, _ convert: (Float) -> T) throws
    -> (loss: Float, logits: [Float], gradients: [String: [Float]]) {
    let backward = try differentiate(graph)
    let table = try inferShapes(backward, batch: batch)
    var inputs: [String: RefValue<T>] = [:]
    for i in graph.inputs {
      inputs[i.name] = i.dtype == .f32 ? .f32(Tensor(shape: table[i.name]!.dims, data: images.map(convert))) : .i32(shape: [batch], data: labels)
    }
    let params = parameters.tensors().mapValues { Tensor(shape: $0.shape, data: $0.data.map(convert)) }
    let env = try Interpreter<T>(graph: backward, shapes: table)
      .run(inputs: inputs, parameters: params, context: ReferenceContext(training: true, seed: 11, step: UInt64(step), bf16Products: bf16Products))
    var grads: [String: [Float]] = [:]
    for d in backward.gradients { grads[d.parameter] = env[d.value]!.tensor!.data.map { Float($0) } }
    return (Float(env[graph.minimize!]!.tensor!.data[0]), env[graph.output!]!.tensor!.data.map { Float($0) }, grads)
  }
}

/// Asserts |a - b| <= atol + rtol * max|a| elementwise (tolerance scaled by the tensor's magnitude). A NaN or an
/// infinity on either side is a failure (even the same one on both): no kernel here should make one, and a
/// comparison that let them through would pass a back end that returns NaN everywhere.
public func expectClose(_ a: [Float], _ b: [Float], rtol: Float = 2e-4, atol: Float = 1e-6, _ what: String,
                        sourceLocation: SourceLocation = #_sourceLocation) {
  #expect(a.count == b.count, "\(what): sizes \(a.count) and \(b.count)", sourceLocation: sourceLocation)
  guard a.count == b.count else { return }
  let (worst, at, scale) = worstDifference(a, b)
  #expect(worst <= atol + rtol * scale, "\(what): worst difference \(worst) at \(at) (\(a.isEmpty ? 0 : a[at]) vs \(b.isEmpty ? 0 : b[at])), scale \(scale)",
          sourceLocation: sourceLocation)
}

/// The largest |a[i] - b[i]| and its index (infinity where either is not finite), and max|a| over a's finite values.
public func worstDifference(_ a: [Float], _ b: [Float]) -> (worst: Float, at: Int, scale: Float) {
  let scale = a.lazy.filter(\.isFinite).map(abs).max() ?? 0
  var worst: Float = 0, at = 0
  for i in a.indices {
    let d = a[i].isFinite && b[i].isFinite ? abs(a[i] - b[i]) : .infinity
    if d > worst || (d == .infinity && worst < .infinity) { (worst, at) = (d, i) }
  }
  return (worst, at, scale)
}
