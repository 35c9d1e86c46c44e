/// `add(a, b)`: the elementwise sum, for residual joins, where either operand may instead be a per-channel
/// [N, C, 1, 1] tensor added to each plane of the other; `differentiate` also uses it to sum the gradients of a
/// value with several users.
public struct AddOp: ForwardOp {
  public var onnx: ONNXForm { .node("Add", inputs: [.operand(0), .operand(1)], attributes: []) }
  /// A sum of two activations (the import takes the sum with a constant after a MatMul as a dense layer's bias).
  public static let onnxReading = ONNXReading.node(["Add"]) { n in
    guard n.inputCount == 2 else { throw n.fail("Add takes two inputs") }
    return ONNXRead(.add, operands: [0, 1])
  }
  public init() {}
  public static let syntax = OpSyntax("add", operands: ["a", "b"]) { _ in .add }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Channels.productType(spelling, x[0], x[1]) }
  /// d(a + b) passes dy to an operand of the sum's shape unchanged, and sums it over each plane for a
  /// per-channel one.
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    zip(node.args, wants).map { a, want in
      guard want else { return nil }
      return b.sameShape(a, node.name) ? dy : b.emit("\(a)_grad", .addGrad, [dy, a])
    }
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Channels.broadcast(try x.f32(0), try x.f32(1), +)]
  }
}

/// `add_grad(dy, x)`: the gradient of an `add` operand x: dy summed over each plane when x is per-channel
/// ([N, C, 1, 1]), dy itself when x has dy's shape.
public struct AddGradOp: BackwardOp {
  public init() {}
  public static let syntax = OpSyntax("add_grad", operands: ["dy", "x"]) { _ in .addGrad }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType {
    guard try Channels.productType("add_grad", x[0], x[1]) == x[0] else {
      throw ShapeError("add_grad: x \(x[1]) is not dy's shape or one value per channel of it (\(x[0]))", operand: 1)
    }
    return x[1]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let dy = try x.f32(0)
    // In order along each plane, as the kernel sums.
    return [Channels.planeSums(try x.f32(1).shape, of: dy.data.count) { dy.data[$0] }]
  }
}
