/// `add(a, b)`: the elementwise sum, for residual joins; `differentiate` also uses it to sum the gradients
/// of a value with several users.
public struct AddOp: ForwardOp {
  public var onnx: ONNXForm { .node("Add", inputs: [.operand(0), .operand(1)], attributes: []) }
  public init() {}
  public static let syntax = OpSyntax("add", operands: ["a", "b"]) { _ in .add }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try sameShape(spelling, x[0], x[1]) }
  /// d(a + b) passes dy to both operands unchanged.
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    wants.map { $0 ? dy : nil }
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let (p, q) = (try x.f32(0), try x.f32(1))
    return [Tensor(shape: p.shape, data: zip(p.data, q.data).map { $0 + $1 })]
  }
}
