import GraphIR
import Passes

/// The reference interpreter: runs a graph node by node with each op's plain reference kernel.
/// Slow on purpose; it is the definition the compiled back ends are checked against.
public struct Interpreter<T: Real> {
  public let graph: Graph
  public let shapes: ShapeTable

  public init(graph: Graph, shapes: ShapeTable) {
    self.graph = graph
    self.shapes = shapes
  }

  /// Evaluates every node; returns all values by name (inputs, parameters and results).
  public func run(inputs: [String: RefValue<T>], parameters: [String: Tensor<T>], context: ReferenceContext) throws(EvaluationError) -> [String: RefValue<T>] {
    var env: [String: RefValue<T>] = [:]
    for decl in graph.inputs {
      guard let v = inputs[decl.name] else { throw EvaluationError("missing input '\(decl.name)'") }
      let want = shapes[decl.name]!.dims
      let got: [Int]
      switch (decl.dtype, v) {
      case (.f32, .f32(let t)): got = t.shape
      case (.i32, .i32(let s, _)): got = s
      default: throw EvaluationError("input '\(decl.name)' must be \(decl.dtype.rawValue)")
      }
      guard got == want else { throw EvaluationError("input '\(decl.name)' has shape \(got), expected \(want)") }
      env[decl.name] = v
    }
    for (name, t) in parameters { env[name] = .f32(t) }
    // A fine-tuning step's frozen part runs as in evaluation (`Graph.evaluationNodes`).
    let evaluation = context.training ? graph.evaluationNodes : []
    var evaluating = context
    evaluating.training = false
    for node in graph.nodes {
      var operands = node.args.map { env[$0]! }
      for suffix in node.op.parameterSuffixes + node.op.bufferSuffixes {
        guard let p = parameters["\(node.name).\(suffix)"] else { throw EvaluationError("missing parameter '\(node.name).\(suffix)'") }
        operands.append(.f32(p))
      }
      let outputs = try node.op.referenceOutputs(node, operands, evaluation.contains(node.name) ? evaluating : context)
      env[node.name] = .f32(outputs[0])
      for (suffix, t) in zip(node.op.secondaryOutputs, outputs.dropFirst()) { env["\(node.name).\(suffix)"] = .f32(t) }
    }
    return env
  }
}
