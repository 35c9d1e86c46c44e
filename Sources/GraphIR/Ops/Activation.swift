/// The elementwise activations `relu`, `leaky_relu`, `sigmoid`, `tanh`, `clip`, `hardsigmoid`, `hardswish`, `silu` and `gelu`, each defined once by its value and
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
  public static let onnxReading = ONNXReading.node(["Relu"]) { _ in ONNXRead(.relu) }
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
  public static let onnxReading = ONNXReading.node(["LeakyRelu"]) { n in
    ONNXRead(.leakyReLU(slope: Double(try n.finite("alpha", default: Float(defaultSlope)))))
  }
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
  public static let onnxReading = ONNXReading.node(["Sigmoid"]) { _ in ONNXRead(.sigmoid) }
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
  public static let onnxReading = ONNXReading.node(["Tanh"]) { _ in ONNXRead(.tanh) }
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

/// `clip(x, min, max)`: x limited to [min, max] (`nn.Hardtanh`; `nn.ReLU6` is min 0, max 6). The gradient
/// reads x and passes dy strictly inside the range, as PyTorch's does.
public struct ClipOp: Activation {
  public var onnx: ONNXForm {
    .node("Clip", inputs: [.operand(0), .scalar("min", value: Float(min)), .scalar("max", value: Float(max))], attributes: [])
  }
  /// Constant bounds (ReLU6 is Clip(0, 6)): attributes before opset 11, constant inputs from it.
  public static let onnxReading = ONNXReading.node(["Clip"]) { n in
    var bounds = [n.float("min"), n.float("max")]
    for i in [1, 2] where i < n.inputCount {
      let bound: ONNXTensor?
      do { bound = try n.constant(i) } catch { throw n.fail("input \(i + 1) must be a constant scalar bound") }
      guard let bound else { continue }
      guard bound.data.count == 1 else { throw n.fail("input \(i + 1) must be a constant scalar bound") }
      bounds[i - 1] = bound.data[0]
    }
    guard let lo = bounds[0], let hi = bounds[1], lo.isFinite, hi.isFinite, lo < hi else {
      throw n.fail("bounds \(bounds.map { $0.map { "\($0)" } ?? "none" }): cnnc clips between two finite bounds, min below max")
    }
    return ONNXRead(.clip(min: Double(lo), max: Double(hi)))
  }
  public var min: Double
  public var max: Double
  public init(min: Double, max: Double) {
    self.min = min
    self.max = max
  }
  static let attrs = [AttrSpec("min", .float, required: true), AttrSpec("max", .float, required: true)]
  /// The attributes, checked: a range of finite bounds, min below max.
  static func clip(_ a: Attributes) throws(AttrError) -> (min: Double, max: Double) {
    let lo = a.number("min", default: 0), hi = a.number("max", default: 0)
    guard lo < hi else { throw AttrError(attribute: "max", message: "'max' must be greater than 'min' (\(formatFloat(lo))), got \(formatFloat(hi))") }
    return (lo, hi)
  }
  public static let syntax = OpSyntax("clip", operands: ["x"], attrs: attrs) { a throws(AttrError) in
    let r = try clip(a)
    return .clip(min: r.min, max: r.max)
  }
  public var printedAttributes: [(String, String)] { [("min", formatFloat(min)), ("max", formatFloat(max))] }
  public var gradientOp: Op { .clipGrad(min: min, max: max) }
  public static let gradientReadsInput = true
  public func value<S: ActivationScalar>(_ x: S) -> S {
    .ifPositive(x - .constant(min), .ifPositive(x - .constant(max), .constant(max), x), .constant(min))
  }
  public func derivative<S: ActivationScalar>(dy: S, saved x: S) -> S {
    .ifPositive(x - .constant(min), .ifPositive(.constant(max) - x, dy, .constant(0)), .constant(0))
  }
}

/// `clip_grad(dy, x, min, max)`.
public struct ClipGradOp: ActivationGradient {
  public var activation: ClipOp
  public init(min: Double, max: Double) { activation = ClipOp(min: min, max: max) }
  public static let syntax = OpSyntax("clip_grad", operands: ["dy", "x"], attrs: ClipOp.attrs) { a throws(AttrError) in
    let r = try ClipOp.clip(a)
    return .clipGrad(min: r.min, max: r.max)
  }
}

/// `hardsigmoid(x)`: (x + 3) / 6 limited to [0, 1] (`nn.Hardsigmoid`); dx = dy / 6 strictly inside (-3, 3).
public struct HardSigmoidOp: Activation {
  public var onnx: ONNXForm { .node("HardSigmoid", inputs: [.operand(0)], attributes: [ONNXAttribute("alpha", .float(1.0 / 6)), ONNXAttribute("beta", .float(0.5))]) }
  /// Only PyTorch's slope and offset (ONNX's defaults are 0.2 and 0.5).
  public static let onnxReading = ONNXReading.node(["HardSigmoid"]) { n in
    let alpha = try n.finite("alpha", default: 0.2), beta = try n.finite("beta", default: 0.5)
    guard abs(alpha - 1 / 6) < 1e-6, beta == 0.5 else {
      throw n.fail("alpha \(alpha), beta \(beta): cnnc's hardsigmoid is PyTorch's (alpha 1/6, beta 1/2)")
    }
    return ONNXRead(.hardSigmoid)
  }
  public init() {}
  public static let syntax = OpSyntax("hardsigmoid", operands: ["x"]) { _ in .hardSigmoid }
  public var gradientOp: Op { .hardSigmoidGrad }
  public static let gradientReadsInput = true
  public func value<S: ActivationScalar>(_ x: S) -> S {
    .ifPositive(x + .constant(3), .ifPositive(x - .constant(3), .constant(1), (x + .constant(3)) / .constant(6)), .constant(0))
  }
  public func derivative<S: ActivationScalar>(dy: S, saved x: S) -> S {
    .ifPositive(x + .constant(3), .ifPositive(.constant(3) - x, dy / .constant(6), .constant(0)), .constant(0))
  }
}

/// `hardsigmoid_grad(dy, x)`.
public struct HardSigmoidGradOp: ActivationGradient {
  public init() {}
  public var activation: HardSigmoidOp { HardSigmoidOp() }
  public static let syntax = OpSyntax("hardsigmoid_grad", operands: ["dy", "x"]) { _ in .hardSigmoidGrad }
}

/// `hardswish(x)`: x * hardsigmoid(x) (`nn.Hardswish`): 0 up to -3, x from 3; dx = dy * (x / 3 + 1/2) on
/// [-3, 3], as PyTorch's gradient (which is -dy/2 at -3).
public struct HardSwishOp: Activation {
  public var onnx: ONNXForm { .node("HardSwish", inputs: [.operand(0)], attributes: []) }
  public static let onnxReading = ONNXReading.node(["HardSwish"]) { _ in ONNXRead(.hardSwish) }
  public init() {}
  public static let syntax = OpSyntax("hardswish", operands: ["x"]) { _ in .hardSwish }
  public var gradientOp: Op { .hardSwishGrad }
  public static let gradientReadsInput = true
  public func value<S: ActivationScalar>(_ x: S) -> S {
    .ifPositive(x + .constant(3), .ifPositive(x - .constant(3), x, x * (x + .constant(3)) / .constant(6)), .constant(0))
  }
  public func derivative<S: ActivationScalar>(dy: S, saved x: S) -> S {
    .ifPositive(.constant(-3) - x, .constant(0), .ifPositive(x - .constant(3), dy, dy * (x / .constant(3) + .constant(0.5))))
  }
}

/// `hardswish_grad(dy, x)`.
public struct HardSwishGradOp: ActivationGradient {
  public init() {}
  public var activation: HardSwishOp { HardSwishOp() }
  public static let syntax = OpSyntax("hardswish_grad", operands: ["dy", "x"]) { _ in .hardSwishGrad }
}

/// `silu(x)`: x * sigmoid(x) (`nn.SiLU`, swish); dx = dy * s * (1 + x * (1 - s)) with s = sigmoid(x).
public struct SiLUOp: Activation {
  /// ONNX has no SiLU before opset 22's Swish; exporters write Sigmoid and Mul, which the import fuses back.
  public var onnx: ONNXForm { .gated(first: "Sigmoid", second: "Mul") }
  public static let onnxReading = ONNXReading.pattern("Mul of x and Sigmoid(x)")
  public init() {}
  public static let syntax = OpSyntax("silu", operands: ["x"]) { _ in .silu }
  public var gradientOp: Op { .siluGrad }
  public static let gradientReadsInput = true
  static func sigmoid<S: ActivationScalar>(_ x: S) -> S { .constant(1) / (.constant(1) + .exponential(.constant(0) - x)) }
  public func value<S: ActivationScalar>(_ x: S) -> S { x * Self.sigmoid(x) }
  public func derivative<S: ActivationScalar>(dy: S, saved x: S) -> S {
    let s = Self.sigmoid(x)
    return dy * s * (.constant(1) + x * (.constant(1) - s))
  }
}

/// `silu_grad(dy, x)`.
public struct SiLUGradOp: ActivationGradient {
  public init() {}
  public var activation: SiLUOp { SiLUOp() }
  public static let syntax = OpSyntax("silu_grad", operands: ["dy", "x"]) { _ in .siluGrad }
}

/// `gelu(x)`: x * Phi(x) = x / 2 * (1 + erf(x / sqrt 2)) (`nn.GELU()`, the exact form); dx = dy * (Phi(x) + x * phi(x)).
/// erf is `GELUOp.erf`, a rational approximation within 7e-8 of it, and the derivative is that approximation's own
/// derivative, so the reference, the kernels and numerical differentiation agree.
public struct GELUOp: Activation {
  /// The Gelu op is opset 20's; before it exporters write the formula, which the import reads back.
  public var onnx: ONNXForm { .erfGELU }
  /// Opset 20's Gelu, exact; the import also matches the Erf formula exporters write before it.
  public static let onnxReading = ONNXReading.node(["Gelu"]) { n in
    guard (n.string("approximate") ?? "none") == "none" else {
      throw n.fail("approximate '\(n.string("approximate")!)': cnnc's gelu is the exact form (approximate 'none')")
    }
    return ONNXRead(.gelu)
  }
  public init() {}
  public static let syntax = OpSyntax("gelu", operands: ["x"]) { _ in .gelu }
  public var gradientOp: Op { .geluGrad }
  public static let gradientReadsInput = true
  static let sqrtHalf = 0.70710678118654752440
  public func value<S: ActivationScalar>(_ x: S) -> S {
    .constant(0.5) * x * (.constant(1) + Self.erf(x * .constant(Self.sqrtHalf)).value)
  }
  public func derivative<S: ActivationScalar>(dy: S, saved x: S) -> S {
    let e = Self.erf(x * .constant(Self.sqrtHalf))
    return dy * (.constant(0.5) * (.constant(1) + e.value) + .constant(0.5 * Self.sqrtHalf) * x * e.slope)
  }

  /// Beyond +-4, float32's erf is +-1: the approximation holds x there.
  static let erfLimit = 4.0
  /// erf(x) ~ x * P(x^2) / Q(x^2) on [-4, 4]: P's coefficients from the highest power down (degree 6 in x^2, so
  /// 13 in x)...
  static let erfNumerator = [-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
                             -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02]
  /// ...and Q's (degree 4 in x^2). Within 6.5e-8 of erf everywhere.
  static let erfDenominator = [-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
                               -1.42647390514189e-02]

  /// erf(x) by the rational approximation, and its slope (the approximation's derivative: 0 where x is clamped).
  static func erf<S: ActivationScalar>(_ x: S) -> (value: S, slope: S) {
    let limit = S.constant(erfLimit)
    let c = S.ifPositive(x - limit, limit, .ifPositive(.constant(0) - limit - x, .constant(0) - limit, x))
    let t = c * c
    // A polynomial in t and its derivative in t, by Horner's rule.
    func horner(_ coefficients: [Double]) -> (S, S) {
      var p = S.constant(coefficients[0]), dp = S.constant(0)
      for a in coefficients.dropFirst() {
        dp = dp * t + p
        p = p * t + .constant(a)
      }
      return (p, dp)
    }
    let (p, dp) = horner(erfNumerator), (q, dq) = horner(erfDenominator)
    // d/dx [x P(x^2) / Q(x^2)] = (P + 2x^2 P') / Q - 2x^2 P Q' / Q^2.
    let slope = ((p + .constant(2) * t * dp) * q - .constant(2) * t * p * dq) / (q * q)
    return (c * p / q, .ifPositive(x - limit, .constant(0), .ifPositive(.constant(0) - limit - x, .constant(0), slope)))
  }
}

/// `gelu_grad(dy, x)`.
public struct GELUGradOp: ActivationGradient {
  public init() {}
  public var activation: GELUOp { GELUOp() }
  public static let syntax = OpSyntax("gelu_grad", operands: ["dy", "x"]) { _ in .geluGrad }
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
