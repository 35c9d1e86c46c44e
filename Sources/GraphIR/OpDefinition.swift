/// One op, defined once: how it is written, what it is for, its shape rule, parameters, cost, reference kernel
/// and (for forward ops) its gradient rule. Each `Ops/X.swift` file defines the ops of one family; `Op` is the
/// closed set of them and `Op.definition` the one place that maps a case to its definition.
public protocol OpDefinition: Sendable {
  /// How the op is written in `.graph` files: its name, operands, attributes, and how they build the op.
  static var syntax: OpSyntax { get }
  /// The dialect the op belongs to.
  var role: OpRole { get }
  /// The positional operands' names: the syntax's, plus any its attributes add.
  var operandNames: [String] { get }
  /// Whether attributes put this forward op in a form only the compiler writes.
  var isCompilerForm: Bool { get }
  /// The form of this op that scales and shifts its output channels by a folded batch norm (`foldBatchNorm`,
  /// for inference), and its output channels; nil for an op no batch norm folds into.
  var batchNormFoldedForm: (op: Op, channels: Int)? { get }
  /// Attributes in canonical order, omitting those at their default.
  var printedAttributes: [(String, String)] { get }
  /// Learnable parameters the op owns, as `state_dict` suffixes.
  var parameterSuffixes: [String] { get }
  /// Non-learnable state the op keeps, as `state_dict` suffixes: saved and loaded with the parameters, with
  /// no gradient and no optimiser state.
  var bufferSuffixes: [String] { get }
  /// Extra results the op defines besides its value, referenced as `NAME.SUFFIX`.
  var secondaryOutputs: [String] { get }
  /// The types of the `secondaryOutputs`.
  func secondaryTypes(_ x: [TensorType], result: TensorType) -> [TensorType]
  /// The shape rule: the result type from the operand types (already checked for arity).
  func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType
  /// Parameter types, in `parameterSuffixes` order, from the operand types.
  func parameterTypes(_ x: [TensorType]) -> [TensorType]
  /// Buffer types, in `bufferSuffixes` order, from the operand types.
  func bufferTypes(_ x: [TensorType]) -> [TensorType]
  /// The constant a parameter or buffer starts at, or nil for the default: uniform in +-1/sqrt(fan_in).
  /// What buffer `suffix` may hold, checked when a checkpoint is loaded.
  func bufferDomain(_ suffix: String) -> BufferDomain
  func initialValue(_ suffix: String) -> Float?
  /// Forward FLOPs per image (a multiply-add counts 2; bias, activations, pooling and softmax are not counted).
  func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int
  /// The reference kernel: plain loops, the definition every back end must reproduce. Returns the value
  /// followed by the `secondaryOutputs`.
  func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>]
  /// What the op assumes of its operands beyond their types (which differentiation and fusion guarantee and
  /// a hand-written IR file might not), checked by the verifier: the message and the operand to blame, or
  /// nil. `producer` gives the op that defined a value.
  func operandInvariant(_ node: Node, producer: (String) -> Op?) -> (message: String, operand: Int)?
}

/// A forward op (what model files are written in): it also has a gradient rule.
public protocol ForwardOp: OpDefinition {
  /// How the op is written as ONNX (no default: every forward op states its form, or why it has none).
  var onnx: ONNXForm { get }
  /// How the import reads the op from ONNX (no default, as for `onnx`).
  static var onnxReading: ONNXReading { get }
  /// Emits the backward nodes of `node` given its output gradient `dy`, and returns the gradient value of
  /// each operand that `wants` asks for (nil elsewhere).
  func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?]
}

/// A forward op whose buffers training updates from statistics of each batch (batch norm's running mean
/// and variance): the statistics are its `secondaryOutputs`, and the runtime folds every shard's into the
/// buffers after the step, so the update sees the whole batch however it was split.
public protocol StatefulOp: ForwardOp {
  /// Integer `state_dict` entries that count the training steps taken (`num_batches_tracked`).
  var counterSuffixes: [String] { get }
  /// Elements each statistic of one run is taken over, from the operand types (N x H x W for batch norm).
  func elementsPerStatistic(_ x: [TensorType]) -> Int
  /// The buffers (in `bufferSuffixes` order) after one training step, from each shard's secondary outputs
  /// (in shard order) and the elements per channel each shard's statistics were taken over.
  func updatedBuffers(_ buffers: [[Float]], shardStatistics: [[[Float]]], elementsPerShard: Int) -> [[Float]]
}

extension StatefulOp {
  /// Counts one training step in the counters of node `name`.
  public func countStep(_ counters: inout [String: Int64], node name: String) {
    for c in counterSuffixes { counters["\(name).\(c)", default: 0] += 1 }
  }
}

/// The values a buffer may hold (every value of a checkpoint must be finite too).
public enum BufferDomain: Sendable, Equatable {
  case finite
  /// A variance, say: never below zero.
  case nonNegative
}

/// Which dialect of the `.graph` language an op belongs to.
public enum OpRole: Sendable {
  /// The spec's ops: what model files are written in.
  case forward
  /// The ops `differentiate` emits.
  case backward
  /// The ops `fuseConvReLUPool` forms.
  case fused
}

extension OpDefinition {
  public var operandNames: [String] { Self.syntax.operands }
  public var isCompilerForm: Bool { false }
  public var batchNormFoldedForm: (op: Op, channels: Int)? { nil }
  public var printedAttributes: [(String, String)] { [] }
  public var parameterSuffixes: [String] { [] }
  public var bufferSuffixes: [String] { [] }
  public var secondaryOutputs: [String] { [] }
  public func secondaryTypes(_ x: [TensorType], result: TensorType) -> [TensorType] { secondaryOutputs.map { _ in result } }
  public func parameterTypes(_ x: [TensorType]) -> [TensorType] { [] }
  public func bufferTypes(_ x: [TensorType]) -> [TensorType] { [] }
  public func initialValue(_ suffix: String) -> Float? { nil }
  public func bufferDomain(_ suffix: String) -> BufferDomain { .finite }
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int { 0 }
  public func operandInvariant(_ node: Node, producer: (String) -> Op?) -> (message: String, operand: Int)? { nil }
  /// The op's name as written in `.graph` files.
  public var spelling: String { Self.syntax.name }
}

/// An op that `differentiate` emits.
public protocol BackwardOp: OpDefinition {}

/// An op that `fuseConvReLUPool` forms from forward or backward ops.
public protocol FusedOp: OpDefinition {
  /// The ops it stands for, as a model file writes them.
  static var replaces: String { get }
  /// Whether it stands for forward ops (false: for gradient ops).
  static var isForward: Bool { get }
}

extension FusedOp {
  public static var isForward: Bool { true }
}

extension ForwardOp {
  public var role: OpRole { .forward }
}
extension BackwardOp {
  public var role: OpRole { .backward }
}
extension FusedOp {
  public var role: OpRole { .fused }
}

/// A node's operand values, as the reference kernels read them: f32 tensors by position, or i32 labels.
public struct Operands<T: Real>: Sendable {
  public var node: Node
  public var values: [RefValue<T>]
  public init(_ node: Node, _ values: [RefValue<T>]) {
    self.node = node
    self.values = values
  }

  /// Operand `i` as an f32 tensor.
  public func f32(_ i: Int) throws(EvaluationError) -> Tensor<T> {
    guard let t = values[i].tensor else { throw EvaluationError("\(node.name): operand \(i + 1) must be f32") }
    return t
  }

  /// Operand `i` as i32 labels.
  public func labels(_ i: Int) throws(EvaluationError) -> [Int32] {
    guard case .i32(_, let labels) = values[i] else { throw EvaluationError("\(node.name): labels must be i32") }
    return labels
  }

  /// Operand `i` as an operand of a conv's or dense layer's products: rounded to bfloat16 when the context says so
  /// and `rounds` (an ungrouped conv; grouped ones are not GEMMs).
  public func product(_ i: Int, _ ctx: ReferenceContext, rounds: Bool = true) throws(EvaluationError) -> Tensor<T> {
    let t = try f32(i)
    guard ctx.bf16Products, rounds else { return t }
    return Tensor(shape: t.shape, data: t.data.map { T(BF16.rounded(Float($0))) })
  }

  /// Operand `i` when `present`, else nil (an optional bias).
  public func f32(_ i: Int, if present: Bool) throws(EvaluationError) -> Tensor<T>? { present ? try f32(i) : nil }
}
