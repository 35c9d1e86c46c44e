/// `dense(x, units, bias)`.
public struct DenseOp: ForwardOp {
  public var attrs: DenseAttrs
  public init(_ attrs: DenseAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("dense", operands: ["x"], attrs: DenseAttrs.syntax) { a throws(AttrError) in .dense(try DenseAttrs(a)) }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public var parameterSuffixes: [String] { attrs.bias ? ["weight", "bias"] : ["weight"] }
  public var operandNames: [String] { attrs.operandNames }
  public var isCompilerForm: Bool { attrs.scaled }
  /// Gemm with B transposed: the weight stays [units, features], PyTorch's layout.
  public var onnx: ONNXForm {
    var plain = attrs
    plain.quantization = nil
    if let q = attrs.quantization { return .quantized(DenseOp(plain).onnx, input: q) }
    return .node("Gemm", inputs: [.operand(0), .parameter("weight")] + (attrs.bias ? [.parameter("bias")] : []), attributes: [ONNXAttribute("transB", .int(1))])
  }
  /// Gemm with alpha 1, beta 1, A as it is and a constant B ([out, in] with transB, else [in, out]) and bias.
  public static let onnxReading = ONNXReading.node(["Gemm"]) { n in
    guard (n.float("alpha") ?? 1) == 1, (n.float("beta") ?? 1) == 1, (n.int("transA") ?? 0) == 0 else {
      throw n.fail("only alpha 1, beta 1 and an untransposed A are supported")
    }
    let b = try n.constant(1, rank: 2, "B must be a 2-D initializer")
    let w = (n.int("transB") ?? 0) == 1 ? b : transposedMatrix(b)
    let bias = n.inputCount > 2 ? try n.constant(2) : nil
    if let bias, bias.shape != [w.shape[0]] { throw n.fail("C must be a bias of \(w.shape[0]) values, got shape \(bias.shape)") }
    return ONNXRead(.dense(DenseAttrs(units: w.shape[0], bias: bias != nil)), tensors: [("weight", w)] + (bias.map { [("bias", $0)] } ?? []), namedBy: 1)
  }
  public var batchNormFoldedForm: (op: Op, channels: Int)? {
    var a = attrs
    a.scaled = true
    return attrs.scaled ? nil : (.dense(a), a.units)
  }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Dense.scaledResultType(spelling, attrs, x) }
  public func parameterTypes(_ x: [TensorType]) -> [TensorType] { Dense.parameterTypes(attrs, x[0]) }
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int { Dense.flopsPerImage(attrs, x[0]) }
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    let x = node.args[0]
    b.parameterGradient("\(node.name).weight", .denseGradWeight, [dy, x])
    if attrs.bias { b.parameterGradient("\(node.name).bias", .denseGradBias, [dy]) }
    guard wants[0] else { return [nil] }
    return [b.emit("\(x)_grad", .denseGradInput, [dy, "\(node.name).weight"])]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [try Dense.apply(attrs, x, ctx)]
  }
}

/// `dense_grad_input(dy, weight)`.
public struct DenseGradInputOp: BackwardOp {
  public init() {}
  public static let syntax = OpSyntax("dense_grad_input", operands: ["dy", "weight"]) { _ in .denseGradInput }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Dense.gradInputType(dy: x[0], weight: x[1]) }
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int { 2 * x[0].dims[1] * x[1].dims[1] }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Dense.backwardInput(dy: try x.product(0, ctx), weight: try x.product(1, ctx))]
  }
}

/// `dense_grad_weight(dy, x)`.
public struct DenseGradWeightOp: BackwardOp {
  public init() {}
  public static let syntax = OpSyntax("dense_grad_weight", operands: ["dy", "x"]) { _ in .denseGradWeight }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Dense.gradWeightType(dy: x[0], x: x[1]) }
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int { 2 * x[0].dims[1] * x[1].dims[1] }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Dense.backwardWeight(dy: try x.product(0, ctx), x: try x.product(1, ctx))]
  }
}

/// `dense_grad_bias(dy)`.
public struct DenseGradBiasOp: BackwardOp {
  public init() {}
  public static let syntax = OpSyntax("dense_grad_bias", operands: ["dy"]) { _ in .denseGradBias }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Dense.gradBiasType(dy: x[0]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Dense.backwardBias(dy: try x.f32(0))]
  }
}

/// `dense(x, units, bias)`: y = x W^T + b with W [units, F], like `nn.Linear`.
public enum Dense {
  /// A forward dense layer's output from its operands (x, the folded batch norm when scaled, weight, bias).
  static func apply<T: Real>(_ a: DenseAttrs, _ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> Tensor<T> {
    let w = a.scaled ? 2 : 1
    let y: Tensor<T>
    if let q = a.quantization {
      y = quantizedForward(q, try x.f32(0), weight: try x.f32(w), bias: try x.f32(w + 1, if: a.bias))
    } else {
      y = forward(try x.product(0, ctx), weight: try x.product(w, ctx), bias: try x.f32(w + 1, if: a.bias))
    }
    return a.scaled ? BatchNorm.applyFold(try x.f32(1), to: y) : y
  }

  /// The result type of a forward dense layer, with its folded batch norm operand checked when scaled.
  static func scaledResultType(_ op: String, _ a: DenseAttrs, _ x: [TensorType]) throws(ShapeError) -> TensorType {
    try BatchNorm.checkFold(op, x, channels: a.units, scaled: a.scaled)
    return try resultType(a, x[0])
  }

  public static func resultType(_ a: DenseAttrs, _ x: TensorType) throws(ShapeError) -> TensorType {
    try expect("dense", x, rank: 2, layout: "[N, F] (insert a flatten before it)")
    if a.quantization != nil, x.dims[1] > Int8Arithmetic.maxTerms {
      throw ShapeError("an int8 dense layer sums \(x.dims[1]) products per output (input \(x)); at most \(Int8Arithmetic.maxTerms) fit its 32-bit sums")
    }
    guard checkedProduct([a.units, x.dims[1]]) != nil else {
      throw ShapeError("dense weight [\(a.units), \(x.dims[1])] has more than 2^40 elements")
    }
    return try checkedType("dense", [x.dims[0], a.units])
  }

  public static func parameterTypes(_ a: DenseAttrs, _ x: TensorType) -> [TensorType] {
    let w = TensorType(.f32, [a.units, x.dims[1]])
    return a.bias ? [w, TensorType(.f32, [a.units])] : [w]
  }

  static func flopsPerImage(_ a: DenseAttrs, _ x: TensorType) -> Int { 2 * a.units * x.dims[1] }

  static func gradInputType(dy: TensorType, weight: TensorType) throws(ShapeError) -> TensorType {
    try expect("dense_grad_input", dy, rank: 2, layout: "[N, units]")
    try expect("dense_grad_input", weight, rank: 2, layout: "[units, F]", operand: 1)
    guard dy.dims[1] == weight.dims[0] else { throw ShapeError("dense_grad_input: dy \(dy) does not match weight \(weight)") }
    return TensorType(.f32, [dy.dims[0], weight.dims[1]])
  }

  static func gradWeightType(dy: TensorType, x: TensorType) throws(ShapeError) -> TensorType {
    try expect("dense_grad_weight", dy, rank: 2, layout: "[N, units]")
    try expect("dense_grad_weight", x, rank: 2, layout: "[N, F]", operand: 1)
    guard dy.dims[0] == x.dims[0] else { throw ShapeError("dense_grad_weight: dy \(dy) and x \(x) differ in batch") }
    return TensorType(.f32, [dy.dims[1], x.dims[1]])
  }

  static func gradBiasType(dy: TensorType) throws(ShapeError) -> TensorType {
    try expect("dense_grad_bias", dy, rank: 2, layout: "[N, units]")
    return TensorType(.f32, [dy.dims[1]])
  }

  @_specialize(where T == Float)
  @_specialize(where T == Double)
  /// An int8 dense layer (`Int8Arithmetic`): the input's u8 steps, each unit's s8 steps, their products summed
  /// exactly, scaled back, then the bias added. Computed in f32 whatever T.
  public static func quantizedForward<T: Real>(_ q: Quantization, _ x: Tensor<T>, weight w: Tensor<T>, bias: Tensor<T>?) -> Tensor<T> {
    let (n, f, u) = (x.shape[0], x.shape[1], w.shape[0])
    let xq = x.data.map { Int32(Int8Arithmetic.activation(Float($0), q)) }, zero = Int32(q.zeroPoint), weights = w.data.map { Float($0) }
    var y = Tensor<T>(zeros: [n, u])
    for o in 0..<u {
      let row = weights[(o * f)..<((o + 1) * f)], scale = Int8Arithmetic.weightScale(row, steps: q.weightSteps)
      let wq = row.map { Int32(Int8Arithmetic.weight($0, scale: scale, steps: q.weightSteps)) }
      for b in 0..<n {
        var sum: Int32 = 0
        for i in 0..<f { sum += wq[i] * (xq[b * f + i] - zero) }
        let v = Int8Arithmetic.output(sum, inputScale: q.scale, weightScale: scale)
        y.data[b * u + o] = T(bias.map { v + Float($0.data[o]) } ?? v)
      }
    }
    return y
  }

  public static func forward<T: Real>(_ x: Tensor<T>, weight w: Tensor<T>, bias: Tensor<T>?) -> Tensor<T> {
    let (n, f, u) = (x.shape[0], x.shape[1], w.shape[0])
    var y = Tensor<T>(zeros: [n, u])
    for b in 0..<n { for o in 0..<u {
      var acc: T = bias?.data[o] ?? 0
      for i in 0..<f { acc += x.data[b * f + i] * w.data[o * f + i] }
      y.data[b * u + o] = acc
    } }
    return y
  }

  @_specialize(where T == Float)
  @_specialize(where T == Double)
  public static func backwardInput<T: Real>(dy: Tensor<T>, weight w: Tensor<T>) -> Tensor<T> {
    let (n, u, f) = (dy.shape[0], w.shape[0], w.shape[1])
    var dx = Tensor<T>(zeros: [n, f])
    for b in 0..<n { for o in 0..<u {
      let g = dy.data[b * u + o]
      for i in 0..<f { dx.data[b * f + i] += g * w.data[o * f + i] }
    } }
    return dx
  }

  @_specialize(where T == Float)
  @_specialize(where T == Double)
  public static func backwardWeight<T: Real>(dy: Tensor<T>, x: Tensor<T>) -> Tensor<T> {
    let (n, u, f) = (dy.shape[0], dy.shape[1], x.shape[1])
    var dw = Tensor<T>(zeros: [u, f])
    for b in 0..<n { for o in 0..<u {
      let g = dy.data[b * u + o]
      for i in 0..<f { dw.data[o * f + i] += g * x.data[b * f + i] }
    } }
    return dw
  }

  public static func backwardBias<T: Real>(dy: Tensor<T>) -> Tensor<T> {
    let (n, u) = (dy.shape[0], dy.shape[1])
    var db = Tensor<T>(zeros: [u])
    for b in 0..<n { for o in 0..<u { db.data[o] += dy.data[b * u + o] } }
    return db
  }
}
