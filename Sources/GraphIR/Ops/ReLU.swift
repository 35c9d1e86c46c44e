/// `relu(x)`: max(x, 0) elementwise; its gradient passes dy where the output is positive.
public enum ReLU {
  static func resultType(_ x: TensorType) throws(ShapeError) -> TensorType {
    guard x.dtype == .f32 else { throw ShapeError("relu expects an f32 tensor, got \(x)") }
    return x
  }

  static func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    guard wants[0] else { return [nil] }
    return [b.emit("\(node.args[0])_grad", .reluGrad, [dy, node.name])]
  }

  public static func forward<T: Real>(_ x: Tensor<T>) -> Tensor<T> {
    Tensor(shape: x.shape, data: x.data.map { $0 > 0 ? $0 : 0 })
  }

  public static func backward<T: Real>(dy: Tensor<T>, y: Tensor<T>) -> Tensor<T> {
    Tensor(shape: dy.shape, data: zip(dy.data, y.data).map { $1 > 0 ? $0 : 0 })
  }
}
