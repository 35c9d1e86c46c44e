import Lowering

/// An optimiser that updates parameters in place from their gradients; its state is checkpointed.
public struct Optimizer: Equatable, Sendable {
  /// The optimisers: the lowering's kinds (one list for the compiled and the reference update).
  public typealias Kind = OptimizerSpec.Kind
  public var kind: Kind
  public var learningRate: Float
  public var beta1: Float = 0.9
  public var beta2: Float = 0.999
  public var epsilon: Float = 1e-8
  public var momentum: Float = 0
  public var weightDecay: Float = 0
  /// Per parameter, its learning rate over `learningRate` (a parameter group's own rate); absent: 1.
  public var rateScales: [String: Float] = [:]
  /// Steps taken so far (Adam's bias correction uses it).
  public var step = 0
  /// Named state tensors: `m.NAME`, `v.NAME` (Adam) or `momentum.NAME` (SGD).
  public var state: [String: [Float]] = [:]

  public init(kind: Kind, learningRate: Float, momentum: Float = 0, weightDecay: Float = 0) {
    self.kind = kind
    self.learningRate = learningRate
    self.momentum = momentum
    self.weightDecay = weightDecay
  }

  /// Every setting, as the training banner prints it.
  public var settings: String {
    switch kind {
    case .adam: "adam lr \(learningRate) (betas \(beta1), \(beta2), eps \(epsilon), weight decay \(weightDecay))"
    case .sgd: "sgd lr \(learningRate) (momentum \(momentum), weight decay \(weightDecay), dampening 0, no Nesterov)"
    }
  }

  /// One update with PyTorch's formulas (`torch.optim.Adam` / `torch.optim.SGD`, dampening 0).
  public mutating func update(_ params: inout Parameters, gradients: [String: [Float]]) {
    step += 1
    for name in params.names {
      guard let g = gradients[name] else { continue }  // no gradient: PyTorch skips the parameter too
      var p = params.values[name]!
      let learningRate = self.learningRate * (rateScales[name] ?? 1)
      switch kind {
      case .adam:
        var m = state["m.\(name)"] ?? [Float](repeating: 0, count: p.count)
        var v = state["v.\(name)"] ?? [Float](repeating: 0, count: p.count)
        let bc1 = 1 - pow(beta1, Float(step))
        let bc2Sqrt = (1 - pow(beta2, Float(step))).squareRoot()
        let stepSize = learningRate / bc1
        for i in 0..<p.count {
          let gi = g[i] + weightDecay * p[i]
          m[i] = beta1 * m[i] + (1 - beta1) * gi
          v[i] = beta2 * v[i] + (1 - beta2) * gi * gi
          p[i] -= stepSize * m[i] / (v[i].squareRoot() / bc2Sqrt + epsilon)
        }
        state["m.\(name)"] = m
        state["v.\(name)"] = v
      case .sgd:
        if momentum != 0 {
          // The first step starts the buffer at the gradient itself, as PyTorch does.
          let first = state["momentum.\(name)"] == nil
          var buf = state["momentum.\(name)"] ?? [Float](repeating: 0, count: p.count)
          for i in 0..<p.count {
            let gi = g[i] + weightDecay * p[i]
            buf[i] = first ? gi : momentum * buf[i] + gi
            p[i] -= learningRate * buf[i]
          }
          state["momentum.\(name)"] = buf
        } else {
          for i in 0..<p.count { p[i] -= learningRate * (g[i] + weightDecay * p[i]) }
        }
      }
      params.values[name] = p
    }
  }
}

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif
