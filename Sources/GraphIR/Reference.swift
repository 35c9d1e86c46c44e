/// A value in the reference interpreter: f32 tensors in the scalar type T, i32 labels as Int32.
public enum RefValue<T: Real>: Equatable, Sendable {
  case f32(Tensor<T>)
  case i32(shape: [Int], data: [Int32])

  public var tensor: Tensor<T>? {
    if case .f32(let t) = self { return t }
    return nil
  }
}

/// What a reference kernel may depend on besides its operands.
public struct ReferenceContext: Sendable {
  /// Dropout is active only in training.
  public var training: Bool
  public var seed: UInt64
  public var step: UInt64
  /// The operands of every product of an ungrouped conv or a dense layer (forward and both gradients) rounded to
  /// bfloat16 (`BF16.rounded`), the sums exact as the type keeps them: what a bf16 program's GEMMs compute.
  public var bf16Products: Bool
  public init(training: Bool, seed: UInt64 = 0, step: UInt64 = 0, bf16Products: Bool = false) {
    self.training = training
    self.seed = seed
    self.step = step
    self.bf16Products = bf16Products
  }
}

/// An error raised while evaluating a kernel on concrete data (e.g. a label out of range).
public struct EvaluationError: Error, Equatable, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}

extension Op {
  /// Runs the op's reference kernel and returns its value followed by its `secondaryOutputs`.
  public func referenceOutputs<T: Real>(_ node: Node, _ x: [RefValue<T>], _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    try definition.reference(Operands(node, x), ctx)
  }

  /// Runs the op's reference kernel: plain loops, the definition every back end must reproduce.
  public func reference<T: Real>(_ node: Node, _ x: [RefValue<T>], _ ctx: ReferenceContext) throws(EvaluationError) -> Tensor<T> {
    try referenceOutputs(node, x, ctx)[0]
  }
}
