import GraphIR
import Passes

/// What the trainer needs from a back end: a training step and inference, on normalised batches.
public protocol Backend {
  /// Short name for reports (`interp`, `swift`, `jit`).
  var name: String { get }
  /// Forward and backward on one batch with dropout keyed by (seed, step); returns the loss,
  /// the logits (the graph's output) and every parameter gradient.
  mutating func trainStep(_ params: Parameters, images: [Float], labels: [Int32], seed: UInt64, step: Int) throws
    -> (loss: Float, logits: [Float], gradients: [String: [Float]])
  /// The graph's output for `count` images (inference mode: dropout is the identity).
  mutating func infer(_ params: Parameters, images: [Float], count: Int) throws -> [Float]
}

/// The reference interpreter as a back end: Float kernels, a shape table per batch size.
public struct InterpreterBackend: Backend {
  public let name = "interp"
  let forward: Graph
  let backward: Graph
  var tables: [Int: (ShapeTable, ShapeTable)] = [:]

  public init(graph: Graph) throws {
    forward = graph
    backward = try differentiate(graph)
  }

  mutating func shapes(_ batch: Int) throws -> (ShapeTable, ShapeTable) {
    if let t = tables[batch] { return t }
    let t = (try inferShapes(forward, batch: batch), try inferShapes(backward, batch: batch))
    tables[batch] = t
    return t
  }

  func tensors(_ p: Parameters) -> [String: Tensor<Float>] {
    Dictionary(uniqueKeysWithValues: p.names.map { ($0, Tensor(shape: p.shapes[$0]!, data: p.values[$0]!)) })
  }

  func inputs(_ table: ShapeTable, images: [Float], labels: [Int32]?) -> [String: RefValue<Float>] {
    var env: [String: RefValue<Float>] = [:]
    for i in forward.inputs {
      let t = table[i.name]!
      switch i.dtype {
      case .f32: env[i.name] = .f32(Tensor(shape: t.dims, data: images))
      case .i32: env[i.name] = .i32(shape: t.dims, data: labels ?? [Int32](repeating: 0, count: t.count))
      }
    }
    return env
  }

  public mutating func trainStep(_ params: Parameters, images: [Float], labels: [Int32], seed: UInt64, step: Int) throws
    -> (loss: Float, logits: [Float], gradients: [String: [Float]]) {
    let (_, table) = try shapes(labels.count)
    let ctx = ReferenceContext(training: true, seed: seed, step: UInt64(step))
    let env = try Interpreter<Float>(graph: backward, shapes: table)
      .run(inputs: inputs(table, images: images, labels: labels), parameters: tensors(params), context: ctx)
    var grads: [String: [Float]] = [:]
    for d in backward.gradients { grads[d.parameter] = env[d.value]!.tensor!.data }
    return (env[backward.minimize!]!.tensor!.data[0], env[backward.output!]!.tensor!.data, grads)
  }

  public mutating func infer(_ params: Parameters, images: [Float], count: Int) throws -> [Float] {
    // Inference needs no labels and no loss: run the forward graph without them.
    let (table, _) = try shapes(count)
    let env = try Interpreter<Float>(graph: inferenceGraph, shapes: table)
      .run(inputs: inputs(table, images: images, labels: nil), parameters: tensors(params), context: ReferenceContext(training: false))
    return env[forward.output!]!.tensor!.data
  }

  /// The forward graph without the nodes that only feed the loss.
  var inferenceGraph: Graph {
    var needed: Set<String> = [forward.output!]
    for n in forward.nodes.reversed() where needed.contains(n.name) { needed.formUnion(n.args) }
    var g = forward
    g.nodes = forward.nodes.filter { needed.contains($0.name) }
    return g
  }
}
