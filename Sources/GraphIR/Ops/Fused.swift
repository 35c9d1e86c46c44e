/// `conv2d_relu(x)`: relu(conv2d(x)).
public struct Conv2DReLUOp: FusedOp {
  public var attrs: Conv2DAttrs
  public init(_ attrs: Conv2DAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("conv2d_relu", operands: ["x"], attrs: Conv2DAttrs.syntax) { a throws(AttrError) in .conv2dReLU(try Conv2DAttrs(a)) }
  public static let replaces = "conv2d and relu"
  public var printedAttributes: [(String, String)] { attrs.printed }
  public var parameterSuffixes: [String] { Conv2DOp(attrs).parameterSuffixes }
  public var operandNames: [String] { attrs.operandNames }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Conv2D.scaledResultType(spelling, attrs, x) }
  public func parameterTypes(_ x: [TensorType]) -> [TensorType] { Conv2D.parameterTypes(attrs, x[0]) }
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int { Conv2D.flopsPerImage(attrs, x[0], result: result) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [ReLU.forward(try Conv2D.apply(attrs, x, ctx))]
  }
}

/// `conv2d_relu_maxpool(x)`: maxpool(relu(conv2d(x))); also defines `NAME.argmax`, the window position of each maximum.
public struct Conv2DReLUMaxPoolOp: FusedOp {
  public var attrs: Conv2DAttrs
  public var pool: PoolAttrs
  public init(_ attrs: Conv2DAttrs, _ pool: PoolAttrs) {
    self.attrs = attrs
    self.pool = pool
  }
  public static let syntax = OpSyntax("conv2d_relu_maxpool", operands: ["x"], attrs: Conv2DAttrs.syntax + [
    AttrSpec("pool_size", .int, required: true), AttrSpec("pool_stride", .int),
  ]) { a throws(AttrError) in
    let size = try a.int("pool_size", min: 1)
    return .conv2dReLUMaxPool(try Conv2DAttrs(a), PoolAttrs(size: size, stride: try a.int("pool_stride", min: 1, default: size)))
  }
  public static let replaces = "conv2d, relu and maxpool"
  public var printedAttributes: [(String, String)] {
    attrs.printed + [("pool_size", "\(pool.size)")] + (pool.stride != pool.size ? [("pool_stride", "\(pool.stride)")] : [])
  }
  public var parameterSuffixes: [String] { Conv2DOp(attrs).parameterSuffixes }
  public var operandNames: [String] { attrs.operandNames }
  public var secondaryOutputs: [String] { ["argmax"] }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType {
    try Pool.resultType(pool, try Conv2D.scaledResultType(spelling, attrs, x), op: spelling)
  }
  public func parameterTypes(_ x: [TensorType]) -> [TensorType] { Conv2D.parameterTypes(attrs, x[0]) }
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int {
    Conv2D.flopsPerImage(attrs, x[0], result: (try? Conv2D.resultType(attrs, x[0])) ?? result)
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let (y, argmax) = Fused.reluMaxPool(pool, try Conv2D.apply(attrs, x, ctx))
    return [y, argmax]
  }
}

/// `conv2d_act(x[, scale][, residual])`: act(conv2d(x) + residual), the conv's epilogue applying an activation (`act`,
/// with its own attributes) and adding a residual of the conv's shape (`residual: true`, the last operand) as
/// it stores. Formed for inference by `fuseConvEpilogues`; without either it is a conv (which it never is).
public struct Conv2DActOp: FusedOp {
  public var attrs: Conv2DAttrs
  /// The activation applied last (an `Activation`'s op), or nil.
  public var activation: Op?
  public var residual: Bool
  public init(_ attrs: Conv2DAttrs, activation: Op?, residual: Bool) {
    (self.attrs, self.activation, self.residual) = (attrs, activation, residual)
  }

  /// The activations an epilogue applies, by their `.graph` spelling.
  public static let activations: [any Activation.Type] = [
    ReLUOp.self, LeakyReLUOp.self, SigmoidOp.self, TanhOp.self, ClipOp.self, HardSigmoidOp.self, HardSwishOp.self, SiLUOp.self, GELUOp.self,
  ]
  /// The attributes of every epilogue activation, once each and optional here (the activation's own syntax
  /// checks what it requires).
  static let activationAttrs: [AttrSpec] = activations.flatMap { $0.syntax.attrs }.reduce(into: []) { all, a in
    if !all.contains(where: { $0.name == a.name }) { all.append(AttrSpec(a.name, a.kind)) }
  }

  public static let syntax = OpSyntax("conv2d_act", operands: ["x"], attrs: Conv2DAttrs.syntax + [
    AttrSpec("act", .name), AttrSpec("residual", .bool),
  ] + activationAttrs) { a throws(AttrError) in
    var activation: Op?
    if let name = a.name("act") {
      guard let kind = activations.first(where: { $0.syntax.name == name }) else {
        throw AttrError(attribute: "act", message: "'act' must name an activation (\(activations.map { $0.syntax.name }.joined(separator: ", "))), got '\(name)'")
      }
      activation = try kind.syntax.make(a)
    }
    return .conv2dAct(try Conv2DAttrs(a), activation: activation, residual: a.flag("residual"))
  }
  public static let replaces = "conv2d followed by an activation, or by an add of a residual (and an activation)"
  public var printedAttributes: [(String, String)] {
    attrs.printed + (activation.map { [("act", $0.spelling)] + $0.definition.printedAttributes } ?? []) + (residual ? [("residual", "true")] : [])
  }
  public var parameterSuffixes: [String] { Conv2DOp(attrs).parameterSuffixes }
  public var operandNames: [String] { attrs.operandNames + (residual ? ["residual"] : []) }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType {
    let y = try Conv2D.scaledResultType(spelling, attrs, Array(x.prefix(attrs.operandNames.count)))
    if residual, x.count > attrs.operandNames.count { return try sameShape(spelling, y, x[attrs.operandNames.count]) }
    return y
  }
  public func parameterTypes(_ x: [TensorType]) -> [TensorType] { Conv2D.parameterTypes(attrs, x[0]) }
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int { Conv2D.flopsPerImage(attrs, x[0], result: result) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    var values = x.values
    let r = residual ? values.remove(at: attrs.operandNames.count) : nil
    var y = try Conv2D.apply(attrs, Operands(x.node, values), ctx)
    if let r, case .f32(let t) = r { for i in y.data.indices { y.data[i] += t.data[i] } }
    if let f = activation?.definition as? any Activation { y.data = y.data.map { f.value($0) } }
    return [y]
  }
}

/// `dense_relu(x)`: relu(dense(x)).
public struct DenseReLUOp: FusedOp {
  public var attrs: DenseAttrs
  public init(_ attrs: DenseAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("dense_relu", operands: ["x"], attrs: DenseAttrs.syntax) { a throws(AttrError) in .denseReLU(try DenseAttrs(a)) }
  public static let replaces = "dense and relu"
  public var printedAttributes: [(String, String)] { attrs.printed }
  public var parameterSuffixes: [String] { DenseOp(attrs).parameterSuffixes }
  public var operandNames: [String] { attrs.operandNames }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Dense.scaledResultType(spelling, attrs, x) }
  public func parameterTypes(_ x: [TensorType]) -> [TensorType] { Dense.parameterTypes(attrs, x[0]) }
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int { Dense.flopsPerImage(attrs, x[0]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [ReLU.forward(try Dense.apply(attrs, x, ctx))]
  }
}

/// `relu_maxpool_grad(dy, y, y.argmax)`: maxpool_grad and relu_grad in one pass, reading the saved argmax.
public struct ReLUMaxPoolGradOp: FusedOp {
  public var attrs: UnpoolAttrs
  public init(_ attrs: UnpoolAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("relu_maxpool_grad", operands: ["dy", "y", "argmax"], attrs: UnpoolAttrs.syntax) { a throws(AttrError) in
    .reluMaxPoolGrad(try UnpoolAttrs(a))
  }
  public static let replaces = "conv2d, relu and maxpool (cnnc derives their gradients)"
  public static let isForward = false
  /// The argmax must be the one saved by the `conv2d_relu_maxpool` that produced y.
  public func operandInvariant(_ node: Node, producer: (String) -> Op?) -> (message: String, operand: Int)? {
    let y = node.args[1]
    if case .conv2dReLUMaxPool? = producer(y), node.args[2] == "\(y).argmax" { return nil }
    return ("relu_maxpool_grad reads the argmax saved by the conv2d_relu_maxpool that produced its second operand: "
              + "its operands must be (dy, Y, Y.argmax) with Y a conv2d_relu_maxpool, got (\(node.args.joined(separator: ", ")))", 2)
  }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Fused.unpoolType(attrs, dy: x[0], y: x[1], argmax: x[2]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Fused.unpool(attrs, dy: try x.f32(0), y: try x.f32(1), argmax: try x.f32(2))]
  }
}

/// The fused ops that `fuseConvReLUPool` forms after differentiation. Their reference kernels are
/// the compositions of the ops they replace, so the interpreter checks the fusion itself.
public enum Fused {
  static func unpoolType(_ a: UnpoolAttrs, dy: TensorType, y: TensorType, argmax: TensorType) throws(ShapeError) -> TensorType {
    try expect("relu_maxpool_grad", dy, rank: 4, layout: "[N, C, H, W]")
    guard dy == y, y == argmax else {
      throw ShapeError("relu_maxpool_grad: dy \(dy), y \(y) and argmax \(argmax) must have one shape", operand: 1)
    }
    let x = TensorType(.f32, [dy.dims[0], dy.dims[1], a.height, a.width])
    guard try Pool.resultType(a.pool, x, op: "relu_maxpool_grad") == dy else {
      throw ShapeError("relu_maxpool_grad: a \(a.height)x\(a.width) input does not pool to \(dy)")
    }
    return try checkedType("relu_maxpool_grad", x.dims)
  }

  /// maxpool(relu(conv)) of a conv output plus, per output, the flat index of its window's first maximum
  /// within the conv output plane (stored as f32; planes are far below 2^24 elements).
  public static func reluMaxPool<T: Real>(_ p: PoolAttrs, _ conv: Tensor<T>) -> (Tensor<T>, Tensor<T>) {
    let r = ReLU.forward(conv)
    let (n, c, h, w) = (r.shape[0], r.shape[1], r.shape[2], r.shape[3])
    let oh = (h - p.size) / p.stride + 1, ow = (w - p.size) / p.stride + 1
    var y = Tensor<T>(zeros: [n, c, oh, ow])
    var argmax = Tensor<T>(zeros: [n, c, oh, ow])
    for q in 0..<(n * c) { for oy in 0..<oh { for ox in 0..<ow {
      var best = (oy * p.stride) * w + ox * p.stride
      for ky in 0..<p.size { for kx in 0..<p.size {
        let i = (oy * p.stride + ky) * w + ox * p.stride + kx
        if r.data[q * h * w + i] > r.data[q * h * w + best] { best = i }
      } }
      y.data[(q * oh + oy) * ow + ox] = r.data[q * h * w + best]
      argmax.data[(q * oh + oy) * ow + ox] = T(best)
    } } }
    return (y, argmax)
  }

  /// Routes dy to the saved argmax where the pooled value is positive (relu passed it), else 0.
  public static func unpool<T: Real>(_ a: UnpoolAttrs, dy: Tensor<T>, y: Tensor<T>, argmax: Tensor<T>) -> Tensor<T> {
    let (n, c, oh, ow) = (dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3])
    let plane = a.height * a.width
    var dx = Tensor<T>(zeros: [n, c, a.height, a.width])
    for q in 0..<(n * c) { for i in 0..<(oh * ow) where y.data[q * oh * ow + i] > 0 {
      dx.data[q * plane + Int(argmax.data[q * oh * ow + i])] += dy.data[q * oh * ow + i]
    } }
    return dx
  }
}
