/// `avgpool(x, size, stride, padding, ceil_mode, count_include_pad)`.
public struct AvgPoolOp: ForwardOp {
  public var onnx: ONNXForm { .node("AveragePool", inputs: [.operand(0)], attributes: attrs.onnxAttributes(average: true)) }
  public static let onnxReading = ONNXReading.node(["AveragePool"]) { n in ONNXRead(.avgPool(try PoolAttrs.read(n, average: true))) }
  public var attrs: PoolAttrs
  public init(_ attrs: PoolAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("avgpool", operands: ["x"], attrs: PoolAttrs.averageSyntax) { a throws(AttrError) in .avgPool(try PoolAttrs(a)) }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Pool.resultType(attrs, x[0], op: spelling) }
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    guard wants[0] else { return [nil] }
    return [b.emit("\(node.args[0])_grad", .avgPoolGrad(attrs), [dy, node.args[0]])]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [AvgPool.forward(attrs, try x.f32(0))]
  }
}

/// `avgpool_grad(dy, x)`: spreads dy evenly over each window; x gives only the shape.
public struct AvgPoolGradOp: BackwardOp {
  public var attrs: PoolAttrs
  public init(_ attrs: PoolAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("avgpool_grad", operands: ["dy", "x"], attrs: PoolAttrs.averageSyntax) { a throws(AttrError) in
    .avgPoolGrad(try PoolAttrs(a))
  }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Pool.gradType(attrs, dy: x[0], x: x[1]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [AvgPool.backward(attrs, dy: try x.f32(0), xShape: try x.f32(1).shape)]
  }
}

/// `avgpool(x, size, stride, padding, ceil_mode, count_include_pad)`: the mean of each window (its divisor
/// from `PoolAttrs.window`); the gradient spreads dy evenly over the window's input elements.
public enum AvgPool {
  @_specialize(where T == Float)
  @_specialize(where T == Double)
  public static func forward<T: Real>(_ a: PoolAttrs, _ x: Tensor<T>) -> Tensor<T> {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let oh = a.outputSize(h), ow = a.outputSize(w)
    var y = Tensor<T>(zeros: [n, c, oh, ow])
    for p in 0..<(n * c) { for oy in 0..<oh { for ox in 0..<ow {
      let rows = a.window(oy, h), cols = a.window(ox, w)
      var s: T = 0
      for iy in rows.range { for ix in cols.range { s += x.data[(p * h + iy) * w + ix] } }
      y.data[(p * oh + oy) * ow + ox] = s * (1 / T(rows.divisor * cols.divisor))
    } } }
    return y
  }

  @_specialize(where T == Float)
  @_specialize(where T == Double)
  public static func backward<T: Real>(_ a: PoolAttrs, dy: Tensor<T>, xShape: [Int]) -> Tensor<T> {
    let (n, c, h, w) = (xShape[0], xShape[1], xShape[2], xShape[3])
    let (oh, ow) = (dy.shape[2], dy.shape[3])
    var dx = Tensor<T>(zeros: xShape)
    for p in 0..<(n * c) { for oy in 0..<oh { for ox in 0..<ow {
      let rows = a.window(oy, h), cols = a.window(ox, w)
      let g = dy.data[(p * oh + oy) * ow + ox] * (1 / T(rows.divisor * cols.divisor))
      for iy in rows.range { for ix in cols.range { dx.data[(p * h + iy) * w + ix] += g } }
    } } }
    return dx
  }
}
