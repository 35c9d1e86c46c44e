/// The elementwise activations `relu`, `leaky_relu`, `sigmoid` and `tanh`, each defined once by its value and
/// its derivative. Both are written over `ActivationScalar`, so the reference kernels (Float and Double) and
/// the lowering (kernel-IR expressions) evaluate the same formula.
public protocol Activation: ForwardOp {
  /// The gradient op, which reads dy and the saved value (`gradientReadsInput`: x, else y).
  var gradientOp: Op { get }
  /// True when the derivative is written in terms of the input x rather than the output y.
  static var gradientReadsInput: Bool { get }
  /// y = f(x).
  func value<S: ActivationScalar>(_ x: S) -> S
  /// dx = dy * f'(x), given x or y as `gradientReadsInput` says.
  func derivative<S: ActivationScalar>(dy: S, saved: S) -> S
}

/// The arithmetic an activation is written in: implemented by the reference kernels' scalars and by the
/// kernel IR's float expressions.
public protocol ActivationScalar {
  static func constant(_ v: Double) -> Self
  static func + (a: Self, b: Self) -> Self
  static func - (a: Self, b: Self) -> Self
  static func * (a: Self, b: Self) -> Self
  static func / (a: Self, b: Self) -> Self
  static func exponential(_ x: Self) -> Self
  /// `test > 0 ? a : b`.
  static func ifPositive(_ test: Self, _ a: Self, _ b: Self) -> Self
}

extension Float: ActivationScalar {
  public static func constant(_ v: Double) -> Float { Float(v) }
  public static func exponential(_ x: Float) -> Float { Float.exp(x) }
  public static func ifPositive(_ test: Float, _ a: Float, _ b: Float) -> Float { test > 0 ? a : b }
}
extension Double: ActivationScalar {
  public static func constant(_ v: Double) -> Double { v }
  public static func exponential(_ x: Double) -> Double { Double.exp(x) }
  public static func ifPositive(_ test: Double, _ a: Double, _ b: Double) -> Double { test > 0 ? a : b }
}

extension Activation {
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType {
    guard x[0].dtype == .f32 else { throw ShapeError("\(spelling) expects an f32 tensor, got \(x[0])") }
    return x[0]
  }
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    guard wants[0] else { return [nil] }
    return [b.emit("\(node.args[0])_grad", gradientOp, [dy, Self.gradientReadsInput ? node.args[0] : node.name])]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let t = try x.f32(0)
    return [Tensor(shape: t.shape, data: t.data.map { value($0) })]
  }
}

/// The gradient op of an activation: (dy, x or y) -> dx.
public protocol ActivationGradient: BackwardOp {
  associatedtype Forward: Activation
  var activation: Forward { get }
}

extension ActivationGradient {
  public var printedAttributes: [(String, String)] { activation.printedAttributes }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try sameShape(spelling, x[0], x[1]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let (dy, saved) = (try x.f32(0), try x.f32(1))
    return [Tensor(shape: dy.shape, data: zip(dy.data, saved.data).map { activation.derivative(dy: $0, saved: $1) })]
  }
}

// MARK: The activations

/// `relu(x)`: max(x, 0); its gradient passes dy where the output is positive.
public struct ReLUOp: Activation {
  public var onnx: ONNXForm { .node("Relu", inputs: [.operand(0)], attributes: []) }
  public init() {}
  public static let syntax = OpSyntax("relu", operands: ["x"]) { _ in .relu }
  public var gradientOp: Op { .reluGrad }
  public static let gradientReadsInput = false
  public func value<S: ActivationScalar>(_ x: S) -> S { .ifPositive(x, x, .constant(0)) }
  public func derivative<S: ActivationScalar>(dy: S, saved y: S) -> S { .ifPositive(y, dy, .constant(0)) }
}

/// `relu_grad(dy, y)`.
public struct ReLUGradOp: ActivationGradient {
  public init() {}
  public var activation: ReLUOp { ReLUOp() }
  public static let syntax = OpSyntax("relu_grad", operands: ["dy", "y"]) { _ in .reluGrad }
}

/// `leaky_relu(x, slope)`: x where x > 0, else slope * x (`nn.LeakyReLU`). The gradient reads x, so any
/// slope (also a negative one) is differentiated correctly.
public struct LeakyReLUOp: Activation {
  public var onnx: ONNXForm { .node("LeakyRelu", inputs: [.operand(0)], attributes: [ONNXAttribute("alpha", .float(slope))]) }
  public var slope: Double
  public init(slope: Double) { self.slope = slope }
  /// PyTorch's default `negative_slope`.
  public static let defaultSlope = 0.01
  static let attrs = [AttrSpec("slope", .float)]
  public static let syntax = OpSyntax("leaky_relu", operands: ["x"], attrs: attrs) { a in
    .leakyReLU(slope: a.number("slope", default: defaultSlope))
  }
  public var printedAttributes: [(String, String)] { slope == Self.defaultSlope ? [] : [("slope", formatFloat(slope))] }
  public var gradientOp: Op { .leakyReLUGrad(slope: slope) }
  public static let gradientReadsInput = true
  public func value<S: ActivationScalar>(_ x: S) -> S { .ifPositive(x, x, .constant(slope) * x) }
  public func derivative<S: ActivationScalar>(dy: S, saved x: S) -> S { .ifPositive(x, dy, .constant(slope) * dy) }
}

/// `leaky_relu_grad(dy, x, slope)`.
public struct LeakyReLUGradOp: ActivationGradient {
  public var activation: LeakyReLUOp
  public init(slope: Double) { activation = LeakyReLUOp(slope: slope) }
  public static let syntax = OpSyntax("leaky_relu_grad", operands: ["dy", "x"], attrs: LeakyReLUOp.attrs) { a in
    .leakyReLUGrad(slope: a.number("slope", default: LeakyReLUOp.defaultSlope))
  }
}

/// `sigmoid(x)`: 1 / (1 + exp(-x)); dx = dy * y * (1 - y).
public struct SigmoidOp: Activation {
  public var onnx: ONNXForm { .node("Sigmoid", inputs: [.operand(0)], attributes: []) }
  public init() {}
  public static let syntax = OpSyntax("sigmoid", operands: ["x"]) { _ in .sigmoid }
  public var gradientOp: Op { .sigmoidGrad }
  public static let gradientReadsInput = false
  public func value<S: ActivationScalar>(_ x: S) -> S { .constant(1) / (.constant(1) + .exponential(.constant(0) - x)) }
  public func derivative<S: ActivationScalar>(dy: S, saved y: S) -> S { dy * y * (.constant(1) - y) }
}

/// `sigmoid_grad(dy, y)`.
public struct SigmoidGradOp: ActivationGradient {
  public init() {}
  public var activation: SigmoidOp { SigmoidOp() }
  public static let syntax = OpSyntax("sigmoid_grad", operands: ["dy", "y"]) { _ in .sigmoidGrad }
}

/// `tanh(x)`, as 1 - 2 / (exp(2x) + 1): saturates to +-1 without overflow (exp(2x) = inf gives 1);
/// dx = dy * (1 - y^2).
public struct TanhOp: Activation {
  public var onnx: ONNXForm { .node("Tanh", inputs: [.operand(0)], attributes: []) }
  public init() {}
  public static let syntax = OpSyntax("tanh", operands: ["x"]) { _ in .tanh }
  public var gradientOp: Op { .tanhGrad }
  public static let gradientReadsInput = false
  public func value<S: ActivationScalar>(_ x: S) -> S {
    .constant(1) - .constant(2) / (.exponential(.constant(2) * x) + .constant(1))
  }
  public func derivative<S: ActivationScalar>(dy: S, saved y: S) -> S { dy * (.constant(1) - y * y) }
}

/// `tanh_grad(dy, y)`.
public struct TanhGradOp: ActivationGradient {
  public init() {}
  public var activation: TanhOp { TanhOp() }
  public static let syntax = OpSyntax("tanh_grad", operands: ["dy", "y"]) { _ in .tanhGrad }
}

/// The relu reference kernels by name (tests and the fused kernels' compositions use them).
public enum ReLU {
  public static func forward<T: Real>(_ x: Tensor<T>) -> Tensor<T> {
    Tensor(shape: x.shape, data: x.data.map { ReLUOp().value($0) })
  }
  public static func backward<T: Real>(dy: Tensor<T>, y: Tensor<T>) -> Tensor<T> {
    Tensor(shape: dy.shape, data: zip(dy.data, y.data).map { ReLUOp().derivative(dy: $0, saved: $1) })
  }
}
