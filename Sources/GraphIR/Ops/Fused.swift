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

  /// maxpool(relu(conv(x))) plus, per output, the flat index of its window's first maximum within
  /// the conv output plane (stored as f32; planes are far below 2^24 elements).
  public static func convReLUMaxPool<T: Real>(_ a: Conv2DAttrs, _ p: PoolAttrs, _ x: Tensor<T>, weight: Tensor<T>, bias: Tensor<T>?) -> (Tensor<T>, Tensor<T>) {
    let r = ReLU.forward(Conv2D.forward(a, x, weight: weight, bias: bias))
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
