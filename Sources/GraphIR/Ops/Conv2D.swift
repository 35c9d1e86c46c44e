/// `conv2d(x, filters, kernel, stride, padding, bias, groups, dilation)`.
public struct Conv2DOp: ForwardOp {
  public var attrs: Conv2DAttrs
  public init(_ attrs: Conv2DAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("conv2d", operands: ["x"], attrs: Conv2DAttrs.syntax) { a throws(AttrError) in .conv2d(try Conv2DAttrs(a)) }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public var parameterSuffixes: [String] { attrs.bias ? ["weight", "bias"] : ["weight"] }
  public var operandNames: [String] { attrs.operandNames }
  public var isCompilerForm: Bool { attrs.scaled }
  public var onnx: ONNXForm {
    let a = attrs
    var plain = a
    plain.quantization = nil
    if let q = a.quantization { return .quantized(Conv2DOp(plain).onnx, input: q) }
    return .node("Conv", inputs: [.operand(0), .parameter("weight")] + (a.bias ? [.parameter("bias")] : []),
                 attributes: [ONNXAttribute("kernel_shape", .ints([a.kernel, a.kernel])), ONNXAttribute("strides", .ints([a.stride, a.stride])),
                              ONNXAttribute("pads", .ints(Array(repeating: a.padding, count: 4))),
                              ONNXAttribute("dilations", .ints([a.dilation, a.dilation])), ONNXAttribute("group", .int(a.groups))])
  }
  /// Conv with a constant [filters, channels / group, k, k] weight, square kernel, strides, pads and dilations.
  public static let onnxReading = ONNXReading.node(["Conv"]) { n in
    let w = try n.constant(1, rank: 4, "the weight must be a 4-D initializer [filters, channels, k, k]")
    guard w.shape[2] == w.shape[3] else { throw n.fail("kernel \(w.shape[2])x\(w.shape[3]) is not square") }
    let groups = n.int("group") ?? 1, dilation = try n.square("dilations", default: 1)
    guard groups >= 1, w.shape[0] % groups == 0 else { throw n.fail("group \(groups) must be positive and divide the \(w.shape[0]) filters") }
    guard dilation >= 1 else { throw n.fail("attribute 'dilations' is \(dilation); dilations must be at least 1") }
    try n.explicitPadding()
    let stride = try n.square("strides", default: 1), padding = try n.square("pads", default: 0)
    guard w.shape[0] > 0, w.shape[1] > 0, w.shape[2] > 0 else { throw n.fail("the weight's shape \(w.shape) has a zero dimension (no filters, channels or kernel)") }
    guard stride >= 1 else { throw n.fail("attribute 'strides' is \(stride); strides must be at least 1") }
    guard padding >= 0 else { throw n.fail("attribute 'pads' is \(padding); negative padding (cropping) is not supported") }
    let bias = n.inputCount > 2 ? try n.constant(2) : nil
    let attrs = Conv2DAttrs(filters: w.shape[0], kernel: w.shape[2], stride: stride, padding: padding, bias: bias != nil, groups: groups, dilation: dilation)
    return ONNXRead(.conv2d(attrs), tensors: [("weight", w)] + (bias.map { [("bias", $0)] } ?? []), namedBy: 1)
  }
  public var batchNormFoldedForm: (op: Op, channels: Int)? {
    var a = attrs
    a.scaled = true
    return attrs.scaled ? nil : (.conv2d(a), a.filters)
  }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Conv2D.scaledResultType(spelling, attrs, x) }
  public func parameterTypes(_ x: [TensorType]) -> [TensorType] { Conv2D.parameterTypes(attrs, x[0]) }
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int { Conv2D.flopsPerImage(attrs, x[0], result: result) }
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    let x = node.args[0]
    b.parameterGradient("\(node.name).weight", .conv2dGradWeight(attrs), [dy, x])
    if attrs.bias { b.parameterGradient("\(node.name).bias", .conv2dGradBias, [dy]) }
    guard wants[0] else { return [nil] }
    return [b.emit("\(x)_grad", .conv2dGradInput(attrs), [dy, "\(node.name).weight", x])]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [try Conv2D.apply(attrs, x, ctx)]
  }
}

/// `conv2d_grad_input(dy, weight, x)`: the gradient w.r.t. the conv input; x gives only the shape.
public struct Conv2DGradInputOp: BackwardOp {
  public var attrs: Conv2DAttrs
  public init(_ attrs: Conv2DAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("conv2d_grad_input", operands: ["dy", "weight", "x"], attrs: Conv2DAttrs.syntax) { a throws(AttrError) in
    .conv2dGradInput(try Conv2DAttrs(a))
  }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType {
    try Conv2D.gradInputType(attrs, dy: x[0], weight: x[1], x: x[2])
  }
  /// The forward conv's multiply-adds, transposed.
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int { Conv2D.flopsPerImage(attrs, x[2], result: x[0]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let gemm = attrs.groups == 1
    return [Conv2D.backwardInput(attrs, dy: try x.product(0, ctx, rounds: gemm), weight: try x.product(1, ctx, rounds: gemm), xShape: try x.f32(2).shape)]
  }
}

/// `conv2d_grad_weight(dy, x)`: the gradient w.r.t. the conv weight.
public struct Conv2DGradWeightOp: BackwardOp {
  public var attrs: Conv2DAttrs
  public init(_ attrs: Conv2DAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("conv2d_grad_weight", operands: ["dy", "x"], attrs: Conv2DAttrs.syntax) { a throws(AttrError) in
    .conv2dGradWeight(try Conv2DAttrs(a))
  }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Conv2D.gradWeightType(attrs, dy: x[0], x: x[1]) }
  /// The forward conv's multiply-adds, summed over the batch into the kernel instead.
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int { Conv2D.flopsPerImage(attrs, x[1], result: x[0]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let gemm = attrs.groups == 1
    return [Conv2D.backwardWeight(attrs, dy: try x.product(0, ctx, rounds: gemm), x: try x.product(1, ctx, rounds: gemm))]
  }
}

/// `conv2d_grad_bias(dy)`: the gradient w.r.t. the conv bias.
public struct Conv2DGradBiasOp: BackwardOp {
  public init() {}
  public static let syntax = OpSyntax("conv2d_grad_bias", operands: ["dy"]) { _ in .conv2dGradBias }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Conv2D.gradBiasType(dy: x[0]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Conv2D.backwardBias(dy: try x.f32(0))]
  }
}

/// `conv2d(x, filters, kernel, stride, padding, bias, groups, dilation)`: 2-D cross-correlation over NCHW, like `nn.Conv2d`.
public enum Conv2D {
  /// A forward conv's output from its operands (x, the folded batch norm when scaled, weight, bias).
  static func apply<T: Real>(_ a: Conv2DAttrs, _ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> Tensor<T> {
    let w = a.scaled ? 2 : 1, gemm = a.groups == 1
    let y: Tensor<T>
    if let q = a.quantization {
      y = quantizedForward(a, q, try x.f32(0), weight: try x.f32(w), bias: try x.f32(w + 1, if: a.bias))
    } else {
      y = forward(a, try x.product(0, ctx, rounds: gemm), weight: try x.product(w, ctx, rounds: gemm), bias: try x.f32(w + 1, if: a.bias))
    }
    return a.scaled ? BatchNorm.applyFold(try x.f32(1), to: y) : y
  }

  /// The result type of a forward conv, with its folded batch norm operand checked when scaled.
  static func scaledResultType(_ op: String, _ a: Conv2DAttrs, _ x: [TensorType]) throws(ShapeError) -> TensorType {
    try BatchNorm.checkFold(op, x, channels: a.filters, scaled: a.scaled)
    return try resultType(a, x[0])
  }

  // MARK: Shape rules

  /// Spatial output size `(size + 2p - extent) / s + 1`, or an error when the kernel does not fit.
  static func outputSize(_ a: Conv2DAttrs, _ size: Int, axis: String, input: TensorType) throws(ShapeError) -> Int {
    let (twoP, o1) = a.padding.multipliedReportingOverflow(by: 2)
    let (padded, o2) = size.addingReportingOverflow(twoP)
    guard !o1, !o2, padded <= TensorType.maxElements else {
      throw ShapeError("conv2d padding \(a.padding) is too large for input \(input)")
    }
    guard a.extent <= padded else {
      let kernel = a.dilation == 1 ? "kernel \(a.kernel)" : "kernel \(a.kernel) at dilation \(a.dilation) (extent \(a.extent))"
      let rule = a.dilation == 1 ? "kernel" : "(kernel - 1) * dilation + 1"
      throw ShapeError(
        "conv2d \(kernel) is larger than the padded input \(axis) \(padded) (input \(input), padding \(a.padding)); the rule is \(rule) <= \(axis) + 2*padding")
    }
    return (padded - a.extent) / a.stride + 1
  }

  public static func resultType(_ a: Conv2DAttrs, _ x: TensorType) throws(ShapeError) -> TensorType {
    try expect("conv2d", x, rank: 4, layout: "[N, C, H, W]")
    guard x.dims[1] % a.groups == 0 else {
      throw ShapeError("conv2d groups \(a.groups) do not divide the input's \(x.dims[1]) channels (input \(x)); the rule is channels % groups == 0")
    }
    let oh = try outputSize(a, x.dims[2], axis: "height", input: x)
    let ow = try outputSize(a, x.dims[3], axis: "width", input: x)
    guard checkedProduct([a.filters, x.dims[1] / a.groups, a.kernel, a.kernel]) != nil else {
      throw ShapeError("conv2d weight [\(a.filters), \(x.dims[1] / a.groups), \(a.kernel), \(a.kernel)] has more than 2^40 elements")
    }
    if a.quantization != nil, x.dims[1] * a.kernel * a.kernel > Int8Arithmetic.maxTerms {
      throw ShapeError("an int8 conv2d sums \(x.dims[1] * a.kernel * a.kernel) products per output (input \(x)); at most \(Int8Arithmetic.maxTerms) fit its 32-bit sums")
    }
    return try checkedType("conv2d", [x.dims[0], a.filters, oh, ow])
  }

  public static func parameterTypes(_ a: Conv2DAttrs, _ x: TensorType) -> [TensorType] {
    let w = TensorType(.f32, [a.filters, x.dims[1] / a.groups, a.kernel, a.kernel])
    return a.bias ? [w, TensorType(.f32, [a.filters])] : [w]
  }

  static func flopsPerImage(_ a: Conv2DAttrs, _ x: TensorType, result y: TensorType) -> Int {
    2 * y.dims[1] * y.dims[2] * y.dims[3] * (x.dims[1] / a.groups) * a.kernel * a.kernel
  }

  static func gradInputType(_ a: Conv2DAttrs, dy: TensorType, weight: TensorType, x: TensorType) throws(ShapeError) -> TensorType {
    let y = try resultType(a, x)
    guard y == dy else { throw ShapeError("conv2d_grad_input: dy \(dy) does not match the conv output \(y)") }
    guard weight.dims == parameterTypes(a, x)[0].dims else {
      throw ShapeError("conv2d_grad_input: weight \(weight) does not match input \(x)", operand: 1)
    }
    return x
  }

  static func gradWeightType(_ a: Conv2DAttrs, dy: TensorType, x: TensorType) throws(ShapeError) -> TensorType {
    let y = try resultType(a, x)
    guard y == dy else { throw ShapeError("conv2d_grad_weight: dy \(dy) does not match the conv output \(y)") }
    return parameterTypes(a, x)[0]
  }

  static func gradBiasType(dy: TensorType) throws(ShapeError) -> TensorType {
    try expect("conv2d_grad_bias", dy, rank: 4, layout: "[N, F, H, W]")
    return TensorType(.f32, [dy.dims[1]])
  }

  // MARK: Reference kernels

  /// The input element tap (ky, kx) of output (oy, ox) reads, or nil in the padding.
  @inline(__always)
  static func tap(_ a: Conv2DAttrs, _ oy: Int, _ ox: Int, _ ky: Int, _ kx: Int, h: Int, w: Int) -> (Int, Int)? {
    let iy = oy * a.stride - a.padding + ky * a.dilation, ix = ox * a.stride - a.padding + kx * a.dilation
    return iy < 0 || iy >= h || ix < 0 || ix >= w ? nil : (iy, ix)
  }

  @_specialize(where T == Float)
  @_specialize(where T == Double)
  public static func forward<T: Real>(_ a: Conv2DAttrs, _ x: Tensor<T>, weight w: Tensor<T>, bias: Tensor<T>?) -> Tensor<T> {
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (f, k, cg, fg) = (a.filters, a.kernel, c / a.groups, a.filters / a.groups)
    let oh = (h + 2 * a.padding - a.extent) / a.stride + 1, ow = (wd + 2 * a.padding - a.extent) / a.stride + 1
    var y = Tensor<T>(zeros: [n, f, oh, ow])
    for b in 0..<n { for o in 0..<f { for oy in 0..<oh { for ox in 0..<ow {
      var acc: T = bias?.data[o] ?? 0
      for ci in 0..<cg { for ky in 0..<k { for kx in 0..<k {
        guard let (iy, ix) = tap(a, oy, ox, ky, kx, h: h, w: wd) else { continue }
        acc += x.data[((b * c + (o / fg) * cg + ci) * h + iy) * wd + ix] * w.data[((o * cg + ci) * k + ky) * k + kx]
      } } }
      y.data[((b * f + o) * oh + oy) * ow + ox] = acc
    } } } }
    return y
  }

  /// An int8 conv (`Int8Arithmetic`, groups 1, undilated): the input's u8 steps (padding at the zero point), each filter's
  /// s8 steps, their products summed exactly, scaled back, then the bias added. Computed in f32 whatever T.
  public static func quantizedForward<T: Real>(_ a: Conv2DAttrs, _ q: Quantization, _ x: Tensor<T>, weight w: Tensor<T>, bias: Tensor<T>?) -> Tensor<T> {
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (f, k) = (a.filters, a.kernel), ckk = c * k * k
    let oh = (h + 2 * a.padding - a.extent) / a.stride + 1, ow = (wd + 2 * a.padding - a.extent) / a.stride + 1
    let xq = x.data.map { Int32(Int8Arithmetic.activation(Float($0), q)) }, zero = Int32(q.zeroPoint)
    let weights = w.data.map { Float($0) }
    var y = Tensor<T>(zeros: [n, f, oh, ow])
    for o in 0..<f {
      let filter = weights[o * ckk..<(o + 1) * ckk], scale = Int8Arithmetic.weightScale(filter, steps: q.weightSteps)
      let wq = filter.map { Int32(Int8Arithmetic.weight($0, scale: scale, steps: q.weightSteps)) }
      for b in 0..<n { for oy in 0..<oh { for ox in 0..<ow {
        var sum: Int32 = 0
        for ci in 0..<c { for ky in 0..<k { for kx in 0..<k {
          guard let (iy, ix) = tap(a, oy, ox, ky, kx, h: h, w: wd) else { continue }
          sum += wq[(ci * k + ky) * k + kx] * (xq[((b * c + ci) * h + iy) * wd + ix] - zero)
        } } }
        let v = Int8Arithmetic.output(sum, inputScale: q.scale, weightScale: scale)
        y.data[((b * f + o) * oh + oy) * ow + ox] = T(bias.map { v + Float($0.data[o]) } ?? v)
      } } }
    }
    return y
  }

  @_specialize(where T == Float)
  @_specialize(where T == Double)
  public static func backwardInput<T: Real>(_ a: Conv2DAttrs, dy: Tensor<T>, weight w: Tensor<T>, xShape: [Int]) -> Tensor<T> {
    let (n, c, h, wd) = (xShape[0], xShape[1], xShape[2], xShape[3])
    let (f, k, cg, fg) = (a.filters, a.kernel, c / a.groups, a.filters / a.groups)
    let (oh, ow) = (dy.shape[2], dy.shape[3])
    var dx = Tensor<T>(zeros: xShape)
    for b in 0..<n { for o in 0..<f { for oy in 0..<oh { for ox in 0..<ow {
      let g = dy.data[((b * f + o) * oh + oy) * ow + ox]
      for ci in 0..<cg { for ky in 0..<k { for kx in 0..<k {
        guard let (iy, ix) = tap(a, oy, ox, ky, kx, h: h, w: wd) else { continue }
        dx.data[((b * c + (o / fg) * cg + ci) * h + iy) * wd + ix] += g * w.data[((o * cg + ci) * k + ky) * k + kx]
      } } }
    } } } }
    return dx
  }

  @_specialize(where T == Float)
  @_specialize(where T == Double)
  public static func backwardWeight<T: Real>(_ a: Conv2DAttrs, dy: Tensor<T>, x: Tensor<T>) -> Tensor<T> {
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (f, k, cg, fg) = (a.filters, a.kernel, c / a.groups, a.filters / a.groups)
    let (oh, ow) = (dy.shape[2], dy.shape[3])
    var dw = Tensor<T>(zeros: [f, cg, k, k])
    for b in 0..<n { for o in 0..<f { for oy in 0..<oh { for ox in 0..<ow {
      let g = dy.data[((b * f + o) * oh + oy) * ow + ox]
      for ci in 0..<cg { for ky in 0..<k { for kx in 0..<k {
        guard let (iy, ix) = tap(a, oy, ox, ky, kx, h: h, w: wd) else { continue }
        dw.data[((o * cg + ci) * k + ky) * k + kx] += g * x.data[((b * c + (o / fg) * cg + ci) * h + iy) * wd + ix]
      } } }
    } } } }
    return dw
  }

  @_specialize(where T == Float)
  @_specialize(where T == Double)
  public static func backwardBias<T: Real>(dy: Tensor<T>) -> Tensor<T> {
    let (n, f, hw) = (dy.shape[0], dy.shape[1], dy.shape[2] * dy.shape[3])
    var db = Tensor<T>(zeros: [f])
    for b in 0..<n { for o in 0..<f { for i in 0..<hw { db.data[o] += dy.data[(b * f + o) * hw + i] } } }
    return db
  }
}
