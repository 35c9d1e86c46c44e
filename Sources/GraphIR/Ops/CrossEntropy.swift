/// `cross_entropy(logits, labels)`.
public struct CrossEntropyOp: ForwardOp {
  public var onnx: ONNXForm { .none(reason: "the loss: an exported model is the inference graph, pruned to the output") }
  public static let onnxReading = ONNXReading.none(reason: "an imported model's loss is added by the import (a final Softmax or LogSoftmax folds into it)")
  public init() {}
  public static let syntax = OpSyntax("cross_entropy", operands: ["logits", "labels"]) { _ in .crossEntropy }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try CrossEntropy.resultType(logits: x[0], labels: x[1]) }
  /// The loss is the value being minimised, so its own gradient is 1 and `dy` is not read.
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    guard wants[0] else { return [nil, nil] }
    return [b.emit("\(node.args[0])_grad", .crossEntropyGrad, [node.args[0], node.args[1]]), nil]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [try CrossEntropy.forward(try x.f32(0), labels: try x.labels(1))]
  }
}

/// `cross_entropy_grad(logits, labels)`: the gradient of the mean cross-entropy w.r.t. the logits, seeded with 1.
public struct CrossEntropyGradOp: BackwardOp {
  public init() {}
  public static let syntax = OpSyntax("cross_entropy_grad", operands: ["logits", "labels"]) { _ in .crossEntropyGrad }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try CrossEntropy.gradType(logits: x[0], labels: x[1]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [try CrossEntropy.backward(try x.f32(0), labels: try x.labels(1))]
  }
}

/// `cross_entropy(logits, labels)`: mean over the batch of -log softmax(logits)[label], a scalar.
public enum CrossEntropy {
  static func resultType(logits: TensorType, labels: TensorType) throws(ShapeError) -> TensorType {
    try expect("cross_entropy", logits, rank: 2, layout: "of logits [N, K]")
    guard labels.dtype == .i32, labels.dims.count == 1 else {
      throw ShapeError("cross_entropy expects labels i32[N], got \(labels)", operand: 1)
    }
    guard labels.dims[0] == logits.dims[0] else {
      throw ShapeError("cross_entropy: logits \(logits) and labels \(labels) differ in batch size", operand: 1)
    }
    return TensorType(.f32, [])
  }

  static func gradType(logits: TensorType, labels: TensorType) throws(ShapeError) -> TensorType {
    _ = try resultType(logits: logits, labels: labels)
    return logits
  }

  static func checkLabels(_ labels: [Int32], classes k: Int) throws(EvaluationError) {
    for (i, l) in labels.enumerated() where l < 0 || Int(l) >= k {
      throw EvaluationError("label \(l) of example \(i) is out of range for \(k) classes")
    }
  }

  public static func forward<T: Real>(_ z: Tensor<T>, labels: [Int32]) throws(EvaluationError) -> Tensor<T> {
    let (n, k) = (z.shape[0], z.shape[1])
    try checkLabels(labels, classes: k)
    var total: T = 0
    for b in 0..<n {
      let row = Array(z.data[(b * k)..<(b * k + k)])
      let m = row.max() ?? 0
      var s: T = 0
      for v in row { s += T.exp(v - m) }
      total += m + T.log(s) - row[Int(labels[b])]
    }
    return Tensor(shape: [], data: [total / T(n)])
  }

  /// (softmax(z) - onehot(label)) / N.
  public static func backward<T: Real>(_ z: Tensor<T>, labels: [Int32]) throws(EvaluationError) -> Tensor<T> {
    let (n, k) = (z.shape[0], z.shape[1])
    try checkLabels(labels, classes: k)
    var dz = Softmax.forward(z)
    for b in 0..<n {
      dz.data[b * k + Int(labels[b])] -= 1
      for i in 0..<k { dz.data[b * k + i] /= T(n) }
    }
    return dz
  }
}
