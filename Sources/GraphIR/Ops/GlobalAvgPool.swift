/// `global_avgpool(x)`: the mean of each [H, W] plane, [N, C, H, W] -> [N, C, 1, 1] (`nn.AdaptiveAvgPool2d(1)`);
/// the gradient spreads dy / (H W) over the plane.
public struct GlobalAvgPoolOp: ForwardOp {
  public var onnx: ONNXForm { .node("GlobalAveragePool", inputs: [.operand(0)], attributes: []) }
  /// (The import also takes a ReduceMean over H and W as one.)
  public static let onnxReading = ONNXReading.node(["GlobalAveragePool"]) { _ in ONNXRead(.globalAvgPool) }
  public init() {}
  public static let syntax = OpSyntax("global_avgpool", operands: ["x"]) { _ in .globalAvgPool }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType {
    try expect(spelling, x[0], rank: 4, layout: "[N, C, H, W]")
    return try checkedType(spelling, [x[0].dims[0], x[0].dims[1], 1, 1])
  }
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    guard wants[0] else { return [nil] }
    return [b.emit("\(node.args[0])_grad", .globalAvgPoolGrad, [dy, node.args[0]])]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let t = try x.f32(0)
    let (planes, hw) = (t.shape[0] * t.shape[1], t.shape[2] * t.shape[3])
    var y = Tensor<T>(zeros: [t.shape[0], t.shape[1], 1, 1])
    for q in 0..<planes {
      var s: T = 0
      for i in 0..<hw { s += t.data[q * hw + i] }
      y.data[q] = s / T(hw)
    }
    return [y]
  }
}

/// `global_avgpool_grad(dy, x)`: x gives only the shape.
public struct GlobalAvgPoolGradOp: BackwardOp {
  public init() {}
  public static let syntax = OpSyntax("global_avgpool_grad", operands: ["dy", "x"]) { _ in .globalAvgPoolGrad }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType {
    guard try GlobalAvgPoolOp().resultType([x[1]]) == x[0] else {
      throw ShapeError("global_avgpool_grad: dy \(x[0]) does not match global_avgpool(\(x[1]))")
    }
    return x[1]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let (dy, shape) = (try x.f32(0), try x.f32(1).shape)
    let hw = shape[2] * shape[3]
    var dx = Tensor<T>(zeros: shape)
    for q in 0..<(shape[0] * shape[1]) {
      let g = dy.data[q] / T(hw)
      for i in 0..<hw { dx.data[q * hw + i] = g }
    }
    return [dx]
  }
}
