import GraphIR
import Passes
import Runtime

/// Numerical gradient checking in Double: central differences against the symbolic backward graph.
public struct GradCheck {
  public let graph: Graph
  public let backward: Graph
  public let shapes: ShapeTable
  public var inputs: [String: RefValue<Double>]
  public var parameters: [String: Tensor<Double>]
  public let context = ReferenceContext(training: true, seed: 7, step: 3)

  /// Random inputs and parameters (seeded); labels cycle through the classes.
  public init(source: String, batch: Int, seed: UInt64 = 1) throws {
    graph = try Parser.parse(source, defaultName: "gradcheck")
    backward = try differentiate(graph)
    shapes = try inferShapes(backward, batch: batch)
    var rng = SeededRandom(seed: seed)
    inputs = [:]
    for i in graph.inputs {
      let t = shapes[i.name]!
      switch i.dtype {
      case .f32: inputs[i.name] = .f32(Tensor(shape: t.dims, data: (0..<t.count).map { _ in Double(rng.uniform(-1, 1)) }))
      case .i32:
        let k = shapes[graph.output!]!.dims.last!
        inputs[i.name] = .i32(shape: t.dims, data: (0..<t.count).map { Int32($0 % k) })
      }
    }
    parameters = [:]
    for p in graph.parameterNames {
      let t = shapes[p]!
      parameters[p] = Tensor(shape: t.dims, data: (0..<t.count).map { _ in Double(rng.uniform(-0.5, 0.5)) })
    }
    // Buffers at their initial values: training reads the batch's statistics, not these.
    let start = Parameters(graph: graph, shapes: shapes, seed: seed)
    for b in graph.bufferNames { parameters[b] = Tensor(shape: shapes[b]!.dims, data: start.values[b]!.map(Double.init)) }
  }

  public func loss(_ params: [String: Tensor<Double>]) throws -> Double {
    let env = try Interpreter<Double>(graph: graph, shapes: shapes).run(inputs: inputs, parameters: params, context: context)
    return env[graph.minimize!]!.tensor!.data[0]
  }

  public func symbolicGradients() throws -> [String: Tensor<Double>] {
    let env = try Interpreter<Double>(graph: backward, shapes: shapes).run(inputs: inputs, parameters: parameters, context: context)
    return Dictionary(uniqueKeysWithValues: backward.gradients.map { ($0.parameter, env[$0.value]!.tensor!) })
  }

  /// A parameter that the backward graph gives no gradient, though the check needs one for every parameter.
  public struct MissingGradient: Error, CustomStringConvertible {
    public var parameter: String
    public var description: String { "the backward graph has no gradient for parameter '\(parameter)'" }
  }

  /// The largest combined error min(|a-b|, |a-b|/(|a|+|b|)) over `samples` coordinates of every parameter,
  /// comparing `gradients` (by default the symbolic ones) with central differences. Every parameter must
  /// have a gradient: a missing one is an error, not a parameter skipped. A non-finite gradient gives infinity.
  public func maxError(samples: Int = 6, h: Double = 1e-6, gradients: [String: Tensor<Double>]? = nil) throws -> (error: Double, checked: Int) {
    let grads = try gradients ?? symbolicGradients()
    var worst = 0.0, checked = 0
    var rng = SeededRandom(seed: 99)
    for name in graph.parameterNames {
      guard let g = grads[name] else { throw MissingGradient(parameter: name) }
      for _ in 0..<samples {
        let i = Int(rng.next() % UInt64(g.count))
        var plus = parameters, minus = parameters
        plus[name]!.data[i] += h
        minus[name]!.data[i] -= h
        let numeric = (try loss(plus) - loss(minus)) / (2 * h)
        let d = abs(numeric - g.data[i])
        // A NaN or infinite gradient (either kind) is the worst error there is; `max` would keep `worst` over a NaN.
        let e = min(d, d / (abs(numeric) + abs(g.data[i]) + 1e-12))
        worst = e.isFinite ? max(worst, e) : .infinity
        checked += 1
      }
    }
    return (worst, checked)
  }
}
