/// Attributes of `conv2d` and its gradient ops.
public struct Conv2DAttrs: Equatable, Hashable, Sendable {
  public var filters: Int
  public var kernel: Int
  public var stride = 1
  public var padding = 0
  public var bias = true
  public init(filters: Int, kernel: Int, stride: Int = 1, padding: Int = 0, bias: Bool = true) {
    self.filters = filters
    self.kernel = kernel
    self.stride = stride
    self.padding = padding
    self.bias = bias
  }
}

/// Attributes of `maxpool`, `avgpool` and their gradients; `stride` defaults to `size`.
public struct PoolAttrs: Equatable, Hashable, Sendable {
  public var size: Int
  public var stride: Int
  public init(size: Int, stride: Int? = nil) {
    self.size = size
    self.stride = stride ?? size
  }
}

/// Attributes of `dense` and its gradient ops.
public struct DenseAttrs: Equatable, Hashable, Sendable {
  public var units: Int
  public var bias = true
  public init(units: Int, bias: Bool = true) {
    self.units = units
    self.bias = bias
  }
}

/// Attributes of `relu_maxpool_grad`: the pool window and the spatial size of the conv output.
public struct UnpoolAttrs: Equatable, Hashable, Sendable {
  public var pool: PoolAttrs
  public var height: Int
  public var width: Int
  public init(pool: PoolAttrs, height: Int, width: Int) {
    self.pool = pool
    self.height = height
    self.width = width
  }
}

/// Attributes of `dropout` and `dropout_grad`.
public struct DropoutAttrs: Equatable, Hashable, Sendable {
  public var rate: Double
  public init(rate: Double) { self.rate = rate }
}

/// Every operation of the IR: the spec's ops, then the gradient ops that `differentiate` emits.
public enum Op: Equatable, Hashable, Sendable {
  case conv2d(Conv2DAttrs)
  case relu
  case maxPool(PoolAttrs)
  case avgPool(PoolAttrs)
  case flatten
  case dense(DenseAttrs)
  case dropout(DropoutAttrs)
  case softmax
  case crossEntropy

  /// (dy, weight, x): gradient w.r.t. the conv input; x gives only the shape.
  case conv2dGradInput(Conv2DAttrs)
  /// (dy, x): gradient w.r.t. the conv weight.
  case conv2dGradWeight(Conv2DAttrs)
  /// (dy): gradient w.r.t. the conv bias.
  case conv2dGradBias
  /// (dy, y): dy where the relu output is positive.
  case reluGrad
  /// (dy, x): routes dy to the first maximum of each window.
  case maxPoolGrad(PoolAttrs)
  /// (dy, x): spreads dy evenly over each window; x gives only the shape.
  case avgPoolGrad(PoolAttrs)
  /// (dy, x): reshapes dy back to x's shape.
  case flattenGrad
  /// (dy, weight)
  case denseGradInput
  /// (dy, x)
  case denseGradWeight
  /// (dy)
  case denseGradBias
  /// (dy, y): reapplies the mask of the dropout that produced y (same RNG key).
  case dropoutGrad(DropoutAttrs)
  /// (dy, y)
  case softmaxGrad
  /// (logits, labels): gradient of the mean cross-entropy w.r.t. the logits, seeded with 1.
  case crossEntropyGrad
  /// (a, b): elementwise sum; accumulates the gradients of a value with several consumers.
  case add

  // Fused ops, produced by `fuseConvReLUPool` after differentiation (see Ops/Fused.swift).
  /// (x): relu(conv2d(x)).
  case conv2dReLU(Conv2DAttrs)
  /// (x): maxpool(relu(conv2d(x))); also defines `NAME.argmax`, the window position of each maximum.
  case conv2dReLUMaxPool(Conv2DAttrs, PoolAttrs)
  /// (x): relu(dense(x)).
  case denseReLU(DenseAttrs)
  /// (dy, y, y.argmax): maxpool_grad and relu_grad in one pass, reading the saved argmax.
  case reluMaxPoolGrad(UnpoolAttrs)

  /// Number of positional operands.
  public var arity: Int {
    switch self {
    case .relu, .maxPool, .avgPool, .flatten, .dense, .dropout, .softmax, .conv2d: 1
    case .conv2dGradBias, .denseGradBias: 1
    case .crossEntropy, .conv2dGradWeight, .reluGrad, .maxPoolGrad, .avgPoolGrad, .flattenGrad,
      .denseGradInput, .denseGradWeight, .dropoutGrad, .softmaxGrad, .crossEntropyGrad, .add: 2
    case .conv2dGradInput, .reluMaxPoolGrad: 3
    case .conv2dReLU, .conv2dReLUMaxPool, .denseReLU: 1
    }
  }

  /// Learnable parameters the op owns, as `state_dict` suffixes.
  public var parameterSuffixes: [String] {
    switch self {
    case .conv2d(let a), .conv2dReLU(let a), .conv2dReLUMaxPool(let a, _): a.bias ? ["weight", "bias"] : ["weight"]
    case .dense(let a), .denseReLU(let a): a.bias ? ["weight", "bias"] : ["weight"]
    default: []
    }
  }

  /// Extra results an op defines besides its value, referenced as `NAME.SUFFIX`.
  public var secondaryOutputs: [String] {
    if case .conv2dReLUMaxPool = self { return ["argmax"] }
    return []
  }

  /// Which dialect of the `.graph` language an op belongs to.
  public enum Dialect: Sendable {
    /// The spec's ops: what model files are written in.
    case forward
    /// The ops `differentiate` emits.
    case backward
    /// The ops `fuseConvReLUPool` forms.
    case fused
  }

  /// The op's dialect, spelled out for every op so a new one cannot fall into the wrong class.
  public var dialect: Dialect {
    switch self {
    case .conv2d, .relu, .maxPool, .avgPool, .flatten, .dense, .dropout, .softmax, .crossEntropy, .add: .forward
    case .conv2dGradInput, .conv2dGradWeight, .conv2dGradBias, .reluGrad, .maxPoolGrad, .avgPoolGrad, .flattenGrad,
      .denseGradInput, .denseGradWeight, .denseGradBias, .dropoutGrad, .softmaxGrad, .crossEntropyGrad: .backward
    case .conv2dReLU, .conv2dReLUMaxPool, .denseReLU, .reluMaxPoolGrad: .fused
    }
  }

  /// True for the ops `fuseConvReLUPool` produces.
  public var isFused: Bool { dialect == .fused }

  /// True for ops that only the compiler produces (`add` also joins branches in forward graphs).
  public var isGradient: Bool { dialect != .forward }
}

/// A shape rule that failed: the message names the shapes and the rule.
public struct ShapeError: Error, Equatable {
  public var message: String
  /// The operand the error points at, when one is to blame.
  public var operand: Int?
  public init(_ message: String, operand: Int? = nil) {
    self.message = message
    self.operand = operand
  }
}

extension Op {
  /// The shape rule: the result type from the operand types.
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType {
    switch self {
    case .conv2d(let a): try Conv2D.resultType(a, x[0])
    case .conv2dGradInput(let a): try Conv2D.gradInputType(a, dy: x[0], weight: x[1], x: x[2])
    case .conv2dGradWeight(let a): try Conv2D.gradWeightType(a, dy: x[0], x: x[1])
    case .conv2dGradBias: try Conv2D.gradBiasType(dy: x[0])
    case .relu: try ReLU.resultType(x[0])
    case .reluGrad: try sameShape("relu_grad", x[0], x[1])
    case .maxPool(let a), .avgPool(let a): try Pool.resultType(a, x[0], op: self == .maxPool(a) ? "maxpool" : "avgpool")
    case .maxPoolGrad(let a), .avgPoolGrad(let a): try Pool.gradType(a, dy: x[0], x: x[1])
    case .flatten: try Flatten.resultType(x[0])
    case .flattenGrad: try Flatten.gradType(dy: x[0], x: x[1])
    case .dense(let a): try Dense.resultType(a, x[0])
    case .denseGradInput: try Dense.gradInputType(dy: x[0], weight: x[1])
    case .denseGradWeight: try Dense.gradWeightType(dy: x[0], x: x[1])
    case .denseGradBias: try Dense.gradBiasType(dy: x[0])
    case .dropout: try Dropout.resultType(x[0])
    case .dropoutGrad: try sameShape("dropout_grad", x[0], x[1])
    case .softmax: try Softmax.resultType(x[0])
    case .softmaxGrad: try sameShape("softmax_grad", x[0], x[1])
    case .crossEntropy: try CrossEntropy.resultType(logits: x[0], labels: x[1])
    case .crossEntropyGrad: try CrossEntropy.gradType(logits: x[0], labels: x[1])
    case .add: try sameShape("add", x[0], x[1])
    case .conv2dReLU(let a): try Conv2D.resultType(a, x[0])
    case .conv2dReLUMaxPool(let a, let p): try Pool.resultType(p, try Conv2D.resultType(a, x[0]), op: "conv2d_relu_maxpool")
    case .denseReLU(let a): try Dense.resultType(a, x[0])
    case .reluMaxPoolGrad(let a): try Fused.unpoolType(a, dy: x[0], y: x[1], argmax: x[2])
    }
  }

  /// Parameter types (in `parameterSuffixes` order) from the operand types.
  public func parameterTypes(_ x: [TensorType]) -> [TensorType] {
    switch self {
    case .conv2d(let a), .conv2dReLU(let a), .conv2dReLUMaxPool(let a, _): Conv2D.parameterTypes(a, x[0])
    case .dense(let a), .denseReLU(let a): Dense.parameterTypes(a, x[0])
    default: []
    }
  }

  /// Forward FLOPs per image (a multiply-add counts 2; bias, relu, pooling and softmax are not counted).
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int {
    switch self {
    case .conv2d(let a), .conv2dReLU(let a): Conv2D.flopsPerImage(a, x[0], result: result)
    case .conv2dReLUMaxPool(let a, _):
      Conv2D.flopsPerImage(a, x[0], result: (try? Conv2D.resultType(a, x[0])) ?? result)
    case .dense(let a), .denseReLU(let a): Dense.flopsPerImage(a, x[0])
    default: 0
    }
  }
}

/// Shape rule of the elementwise binary ops: both operands must have one type.
func sameShape(_ op: String, _ a: TensorType, _ b: TensorType) throws(ShapeError) -> TensorType {
  guard a.dtype == .f32, b.dtype == .f32 else { throw ShapeError("\(op) needs f32 operands, got \(a) and \(b)") }
  guard a.dims == b.dims else { throw ShapeError("\(op) needs operands of one shape, got \(a) and \(b)", operand: 1) }
  return a
}

/// Checks that an operand is an f32 tensor of a given rank.
func expect(_ op: String, _ t: TensorType, rank: Int, layout: String, operand: Int = 0) throws(ShapeError) {
  guard t.dtype == .f32 else { throw ShapeError("\(op) expects an f32 tensor, got \(t)", operand: operand) }
  guard t.dims.count == rank else {
    throw ShapeError("\(op) expects a rank-\(rank) input \(layout), got \(t) (rank \(t.dims.count))", operand: operand)
  }
}

/// Builds a result type, failing when its element count overflows or passes the limit.
func checkedType(_ op: String, _ dims: [Int]) throws(ShapeError) -> TensorType {
  let t = TensorType(.f32, dims)
  guard t.checkedCount != nil else {
    throw ShapeError("\(op) result \(t) has more than 2^40 elements")
  }
  return t
}
