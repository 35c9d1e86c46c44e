/// A value in the reference interpreter: f32 tensors in the scalar type T, i32 labels as Int32.
public enum RefValue<T: Real>: Equatable, Sendable {
  case f32(Tensor<T>)
  case i32(shape: [Int], data: [Int32])

  public var tensor: Tensor<T>? {
    if case .f32(let t) = self { return t }
    return nil
  }
}

/// What a reference kernel may depend on besides its operands.
public struct ReferenceContext: Sendable {
  /// Dropout is active only in training.
  public var training: Bool
  public var seed: UInt64
  public var step: UInt64
  public init(training: Bool, seed: UInt64 = 0, step: UInt64 = 0) {
    self.training = training
    self.seed = seed
    self.step = step
  }
}

/// An error raised while evaluating a kernel on concrete data (e.g. a label out of range).
public struct EvaluationError: Error, Equatable, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}

extension Op {
  /// Runs the op's reference kernel and returns its value followed by its `secondaryOutputs`.
  public func referenceOutputs<T: Real>(_ node: Node, _ x: [RefValue<T>], _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    func f(_ i: Int) throws(EvaluationError) -> Tensor<T> {
      guard let t = x[i].tensor else { throw EvaluationError("\(node.name): operand \(i + 1) must be f32") }
      return t
    }
    switch self {
    case .conv2dReLUMaxPool(let a, let p):
      let (y, argmax) = Fused.convReLUMaxPool(a, p, try f(0), weight: try f(1), bias: a.bias ? try f(2) : nil)
      return [y, argmax]
    default:
      return [try reference(node, x, ctx)]
    }
  }

  /// Runs the op's reference kernel: plain loops, the definition every back end must reproduce.
  public func reference<T: Real>(_ node: Node, _ x: [RefValue<T>], _ ctx: ReferenceContext) throws(EvaluationError) -> Tensor<T> {
    func f(_ i: Int) throws(EvaluationError) -> Tensor<T> {
      guard let t = x[i].tensor else { throw EvaluationError("\(node.name): operand \(i + 1) must be f32") }
      return t
    }
    switch self {
    case .conv2d(let a): return Conv2D.forward(a, try f(0), weight: try f(1), bias: a.bias ? try f(2) : nil)
    case .conv2dGradInput(let a): return Conv2D.backwardInput(a, dy: try f(0), weight: try f(1), xShape: try f(2).shape)
    case .conv2dGradWeight(let a): return Conv2D.backwardWeight(a, dy: try f(0), x: try f(1))
    case .conv2dGradBias: return Conv2D.backwardBias(dy: try f(0))
    case .relu: return ReLU.forward(try f(0))
    case .reluGrad: return ReLU.backward(dy: try f(0), y: try f(1))
    case .maxPool(let a): return MaxPool.forward(a, try f(0))
    case .maxPoolGrad(let a): return MaxPool.backward(a, dy: try f(0), x: try f(1))
    case .avgPool(let a): return AvgPool.forward(a, try f(0))
    case .avgPoolGrad(let a): return AvgPool.backward(a, dy: try f(0), xShape: try f(1).shape)
    case .flatten: return Flatten.forward(try f(0))
    case .flattenGrad: return Flatten.backward(dy: try f(0), xShape: try f(1).shape)
    case .dense(let a): return Dense.forward(try f(0), weight: try f(1), bias: a.bias ? try f(2) : nil)
    case .denseGradInput: return Dense.backwardInput(dy: try f(0), weight: try f(1))
    case .denseGradWeight: return Dense.backwardWeight(dy: try f(0), x: try f(1))
    case .denseGradBias: return Dense.backwardBias(dy: try f(0))
    case .dropout(let a):
      guard ctx.training else { return try f(0) }
      return Dropout.apply(a, try f(0), key: Dropout.key(node.name), ctx)
    case .dropoutGrad(let a):
      return Dropout.apply(a, try f(0), key: Dropout.key(node.args[1]), ctx)
    case .softmax: return Softmax.forward(try f(0))
    case .softmaxGrad: return Softmax.backward(dy: try f(0), y: try f(1))
    case .crossEntropy:
      guard case .i32(_, let labels) = x[1] else { throw EvaluationError("\(node.name): labels must be i32") }
      return try CrossEntropy.forward(try f(0), labels: labels)
    case .crossEntropyGrad:
      guard case .i32(_, let labels) = x[1] else { throw EvaluationError("\(node.name): labels must be i32") }
      return try CrossEntropy.backward(try f(0), labels: labels)
    case .add:
      let (p, q) = (try f(0), try f(1))
      return Tensor(shape: p.shape, data: zip(p.data, q.data).map { $0 + $1 })
    case .conv2dReLU(let a):
      return ReLU.forward(Conv2D.forward(a, try f(0), weight: try f(1), bias: a.bias ? try f(2) : nil))
    case .conv2dReLUMaxPool:
      return try referenceOutputs(node, x, ctx)[0]
    case .denseReLU(let a):
      return ReLU.forward(Dense.forward(try f(0), weight: try f(1), bias: a.bias ? try f(2) : nil))
    case .reluMaxPoolGrad(let a):
      return Fused.unpool(a, dy: try f(0), y: try f(1), argmax: try f(2))
    }
  }
}
