/// `maxpool(x, size, stride, padding, ceil_mode)`.
public struct MaxPoolOp: ForwardOp {
  public var onnx: ONNXForm { .node("MaxPool", inputs: [.operand(0)], attributes: attrs.onnxAttributes(average: false)) }
  public static let onnxReading = ONNXReading.node(["MaxPool"]) { n in ONNXRead(.maxPool(try PoolAttrs.read(n, average: false))) }
  public var attrs: PoolAttrs
  public init(_ attrs: PoolAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("maxpool", operands: ["x"], attrs: PoolAttrs.syntax) { a throws(AttrError) in .maxPool(try PoolAttrs(a)) }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Pool.resultType(attrs, x[0], op: spelling) }
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    guard wants[0] else { return [nil] }
    return [b.emit("\(node.args[0])_grad", .maxPoolGrad(attrs), [dy, node.args[0]])]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [MaxPool.forward(attrs, try x.f32(0))]
  }
}

/// `maxpool_grad(dy, x)`: routes dy to the first maximum of each window.
public struct MaxPoolGradOp: BackwardOp {
  public var attrs: PoolAttrs
  public init(_ attrs: PoolAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("maxpool_grad", operands: ["dy", "x"], attrs: PoolAttrs.syntax) { a throws(AttrError) in
    .maxPoolGrad(try PoolAttrs(a))
  }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Pool.gradType(attrs, dy: x[0], x: x[1]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [MaxPool.backward(attrs, dy: try x.f32(0), x: try x.f32(1))]
  }
}

/// Shape rule shared by `maxpool` and `avgpool` (`PoolAttrs.outputSize`).
enum Pool {
  static func resultType(_ a: PoolAttrs, _ x: TensorType, op: String) throws(ShapeError) -> TensorType {
    try expect(op, x, rank: 4, layout: "[N, C, H, W]")
    for (axis, size) in [("height", x.dims[2]), ("width", x.dims[3])] where a.size > size + 2 * a.padding {
      let padded = a.padding == 0 ? "" : " plus twice the padding \(a.padding)"
      throw ShapeError("\(op) window \(a.size) is larger than the input \(axis) \(size)\(padded) (input \(x)); the rule is size <= \(axis) + 2 * padding")
    }
    return try checkedType(op, [x.dims[0], x.dims[1], a.outputSize(x.dims[2]), a.outputSize(x.dims[3])])
  }

  static func gradType(_ a: PoolAttrs, dy: TensorType, x: TensorType) throws(ShapeError) -> TensorType {
    let y = try resultType(a, x, op: "pool_grad")
    guard y == dy else { throw ShapeError("pool gradient: dy \(dy) does not match the pool output \(y)") }
    return x
  }
}

/// `maxpool(x, size, stride, padding, ceil_mode)`: the maximum of each window's input elements (padding
/// never wins); the gradient goes to the window's first maximum in row-major order.
public enum MaxPool {
  @_specialize(where T == Float)
  @_specialize(where T == Double)
  public static func forward<T: Real>(_ a: PoolAttrs, _ x: Tensor<T>) -> Tensor<T> {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let oh = a.outputSize(h), ow = a.outputSize(w)
    var y = Tensor<T>(zeros: [n, c, oh, ow])
    for p in 0..<(n * c) { for oy in 0..<oh { for ox in 0..<ow {
      var m = -T.infinity
      for iy in a.window(oy, h).range { for ix in a.window(ox, w).range { m = max(m, x.data[(p * h + iy) * w + ix]) } }
      y.data[(p * oh + oy) * ow + ox] = m
    } } }
    return y
  }

  @_specialize(where T == Float)
  @_specialize(where T == Double)
  public static func backward<T: Real>(_ a: PoolAttrs, dy: Tensor<T>, x: Tensor<T>) -> Tensor<T> {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (oh, ow) = (dy.shape[2], dy.shape[3])
    var dx = Tensor<T>(zeros: x.shape)
    for p in 0..<(n * c) { for oy in 0..<oh { for ox in 0..<ow {
      // Ties go to the first maximum in row-major order; every back end must do the same.
      let rows = a.window(oy, h).range, cols = a.window(ox, w).range
      var best = (p * h + rows.lowerBound) * w + cols.lowerBound
      for iy in rows { for ix in cols {
        let i = (p * h + iy) * w + ix
        if x.data[i] > x.data[best] { best = i }
      } }
      dx.data[best] += dy.data[(p * oh + oy) * ow + ox]
    } } }
    return dx
  }
}
