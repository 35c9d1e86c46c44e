/// `softmax(x)`.
public struct SoftmaxOp: ForwardOp {
  public var onnx: ONNXForm { .node("Softmax", inputs: [.operand(0)], attributes: [ONNXAttribute("axis", .int(1))]) }
  /// Softmax over the classes of [N, K]: ONNX's axis 1, or -1 (the default before and after opset 13).
  public static let onnxReading = ONNXReading.node(["Softmax"]) { n in
    if let axis = n.int("axis"), axis != 1, axis != -1 {
      throw n.fail("attribute 'axis' is \(axis); cnnc takes \(n.opType) over the classes of [N, K] only (axis 1 or -1)")
    }
    return ONNXRead(.softmax)
  }
  public init() {}
  public static let syntax = OpSyntax("softmax", operands: ["x"]) { _ in .softmax }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Softmax.resultType(x[0]) }
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    guard wants[0] else { return [nil] }
    return [b.emit("\(node.args[0])_grad", .softmaxGrad, [dy, node.name])]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Softmax.forward(try x.f32(0))]
  }
}

/// `softmax_grad(dy, y)`.
public struct SoftmaxGradOp: BackwardOp {
  public init() {}
  public static let syntax = OpSyntax("softmax_grad", operands: ["dy", "y"]) { _ in .softmaxGrad }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try sameShape(spelling, x[0], x[1]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Softmax.backward(dy: try x.f32(0), y: try x.f32(1))]
  }
}

/// `softmax(x)`: exp(x) / sum exp(x) over the last axis of [N, K], computed stably.
public enum Softmax {
  static func resultType(_ x: TensorType) throws(ShapeError) -> TensorType {
    try expect("softmax", x, rank: 2, layout: "[N, K]")
    return x
  }

  public static func forward<T: Real>(_ x: Tensor<T>) -> Tensor<T> {
    let (n, k) = (x.shape[0], x.shape[1])
    var y = x
    for b in 0..<n {
      let row = x.data[(b * k)..<(b * k + k)]
      let m = row.max() ?? 0
      var s: T = 0
      for i in 0..<k { s += T.exp(row[b * k + i] - m) }
      for i in 0..<k { y.data[b * k + i] = T.exp(row[b * k + i] - m) / s }
    }
    return y
  }

  /// dx = y * (dy - sum(dy * y)) per row.
  public static func backward<T: Real>(dy: Tensor<T>, y: Tensor<T>) -> Tensor<T> {
    let (n, k) = (y.shape[0], y.shape[1])
    var dx = dy
    for b in 0..<n {
      var dot: T = 0
      for i in 0..<k { dot += dy.data[b * k + i] * y.data[b * k + i] }
      for i in 0..<k { dx.data[b * k + i] = y.data[b * k + i] * (dy.data[b * k + i] - dot) }
    }
    return dx
  }
}
