/// `flatten(x)`.
public struct FlattenOp: ForwardOp {
  public var onnx: ONNXForm { .node("Flatten", inputs: [.operand(0)], attributes: [ONNXAttribute("axis", .int(1))]) }
  /// Flatten at axis 1 (the import also takes a Reshape to [N, features] as one).
  public static let onnxReading = ONNXReading.node(["Flatten"]) { n in
    guard (n.int("axis") ?? 1) == 1 else { throw n.fail("axis \(n.int("axis")!): cnnc flattens everything after the batch (axis 1)") }
    return ONNXRead(.flatten)
  }
  public init() {}
  public static let syntax = OpSyntax("flatten", operands: ["x"]) { _ in .flatten }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Flatten.resultType(x[0]) }
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    guard wants[0] else { return [nil] }
    return [b.emit("\(node.args[0])_grad", .flattenGrad, [dy, node.args[0]])]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Flatten.forward(try x.f32(0))]
  }
}

/// `flatten_grad(dy, x)`: reshapes dy back to x's shape.
public struct FlattenGradOp: BackwardOp {
  public init() {}
  public static let syntax = OpSyntax("flatten_grad", operands: ["dy", "x"]) { _ in .flattenGrad }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Flatten.gradType(dy: x[0], x: x[1]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Flatten.backward(dy: try x.f32(0), xShape: try x.f32(1).shape)]
  }
}

/// `flatten(x)`: [N, ...] to [N, product of the rest] in C,H,W order (a view: the data is unchanged).
public enum Flatten {
  static func resultType(_ x: TensorType) throws(ShapeError) -> TensorType {
    guard x.dtype == .f32 else { throw ShapeError("flatten expects an f32 tensor, got \(x)") }
    guard x.dims.count >= 1 else { throw ShapeError("flatten expects a tensor with a batch dimension, got \(x)") }
    return try checkedType("flatten", [x.dims[0], x.dims.dropFirst().reduce(1, *)])
  }

  static func gradType(dy: TensorType, x: TensorType) throws(ShapeError) -> TensorType {
    guard try resultType(x) == dy else { throw ShapeError("flatten_grad: dy \(dy) does not match flatten(\(x))") }
    return x
  }

  public static func forward<T: Real>(_ x: Tensor<T>) -> Tensor<T> {
    Tensor(shape: [x.shape[0], x.shape.dropFirst().reduce(1, *)], data: x.data)
  }

  public static func backward<T: Real>(dy: Tensor<T>, xShape: [Int]) -> Tensor<T> { Tensor(shape: xShape, data: dy.data) }
}
