/// `dropout(x, rate)`.
public struct DropoutOp: ForwardOp {
  /// An exported model is for inference, where dropout passes its input through.
  public var onnx: ONNXForm { .node("Identity", inputs: [.operand(0)], attributes: []) }
  /// Dropout with a constant ratio (an attribute before opset 12, an input from it) and no mask output used.
  public static let onnxReading = ONNXReading.node(["Dropout"]) { n in
    guard n.outputCount == 1 || !n.hasOutput(1) else { throw n.fail("the dropout mask is used as a value; cnnc's dropout has none") }
    var rate = Double(try n.finite("ratio", default: 0.5, "in [0, 1)") { $0 >= 0 && $0 < 1 })
    if n.inputCount > 1, let r = try? n.constant(1), r.data.count == 1 {
      guard r.data[0].isFinite, r.data[0] >= 0, r.data[0] < 1 else { throw n.fail("the ratio input is \(r.data[0]); it must be in [0, 1)") }
      rate = Double(r.data[0])
    }
    return ONNXRead(.dropout(DropoutAttrs(rate: rate)))
  }
  public var attrs: DropoutAttrs
  public init(_ attrs: DropoutAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("dropout", operands: ["x"], attrs: DropoutAttrs.syntax) { a throws(AttrError) in .dropout(try DropoutAttrs(a)) }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Dropout.resultType(x[0]) }
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    guard wants[0] else { return [nil] }
    return [b.emit("\(node.args[0])_grad", .dropoutGrad(attrs), [dy, node.name])]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    guard ctx.training else { return [try x.f32(0)] }
    return [Dropout.apply(attrs, try x.f32(0), key: Dropout.key(x.node.name), ctx)]
  }
}

/// `dropout_grad(dy, y)`: reapplies the mask of the dropout that produced y (the same RNG key).
public struct DropoutGradOp: BackwardOp {
  public var attrs: DropoutAttrs
  public init(_ attrs: DropoutAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("dropout_grad", operands: ["dy", "y"], attrs: DropoutAttrs.syntax) { a throws(AttrError) in
    .dropoutGrad(try DropoutAttrs(a))
  }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try sameShape(spelling, x[0], x[1]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Dropout.apply(attrs, try x.f32(0), key: Dropout.key(x.node.args[1]), ctx)]
  }
  /// The mask is keyed by the forward dropout's name, so y must be a dropout's output.
  public func operandInvariant(_ node: Node, producer: (String) -> Op?) -> (message: String, operand: Int)? {
    if case .dropout? = producer(node.args[1]) { return nil }
    return ("dropout_grad recomputes the mask of the dropout that produced its second operand; '\(node.args[1])' is not a dropout", 1)
  }
}

/// `dropout(x, rate)`: inverted dropout in training, identity at inference.
///
/// The mask comes from a counter-based RNG keyed by (seed, step, node, element), so any back end
/// reproduces it without storing it, and the gradient recomputes it.
public enum Dropout {
  static func resultType(_ x: TensorType) throws(ShapeError) -> TensorType {
    guard x.dtype == .f32 else { throw ShapeError("dropout expects an f32 tensor, got \(x)") }
    return x
  }

  /// The RNG key of a dropout node: FNV-1a of its name.
  public static func key(_ name: String) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in name.utf8 {
      h ^= UInt64(b)
      h = h &* 0x100_0000_01b3
    }
    return h
  }

  /// The splitmix64 finaliser as its steps, `z = (z ^ (z >> shift)) * multiplier` (the last without a
  /// multiply): the one definition the reference kernel and the lowering both evaluate.
  public static let mixSteps: [(shift: Int, multiplier: UInt64?)] = [(30, 0xbf58_476d_1ce4_e5b9), (27, 0x94d0_49bb_1331_11eb), (31, nil)]
  /// The Weyl increment that spreads element indices over the stream (2^64 / golden ratio).
  public static let golden: UInt64 = 0x9e37_79b9_7f4a_7c15
  /// A draw is the top 24 bits of the mixed value.
  public static let drawShift = 40

  /// The splitmix64 finaliser.
  @inline(__always) public static func mix(_ z0: UInt64) -> UInt64 {
    var z = z0
    for (shift, multiplier) in mixSteps {
      z ^= z >> UInt64(shift)
      if let multiplier { z = z &* multiplier }
    }
    return z
  }

  /// Per-step stream base; element i is dropped when `mix(base + i * golden) >> drawShift < threshold`.
  public static func streamBase(seed: UInt64, step: UInt64, key: UInt64) -> UInt64 { mix(mix(seed ^ key) &+ step) }
  /// Elements whose 24-bit draw falls below this are dropped.
  public static func threshold(_ rate: Double) -> UInt64 { UInt64(rate * 16_777_216) }
  @inline(__always) public static func keeps(base: UInt64, index: Int, threshold: UInt64) -> Bool {
    mix(base &+ UInt64(index) &* golden) >> UInt64(drawShift) >= threshold
  }

  /// Applies the mask and the 1/(1-rate) scale (forward, and backward on dy).
  public static func apply<T: Real>(_ a: DropoutAttrs, _ x: Tensor<T>, key: UInt64, _ ctx: ReferenceContext) -> Tensor<T> {
    let base = streamBase(seed: ctx.seed, step: ctx.step, key: key)
    let t = threshold(a.rate)
    let scale = T(1 / (1 - a.rate))
    var y = x
    for i in 0..<x.count { y.data[i] = keeps(base: base, index: i, threshold: t) ? x.data[i] * scale : 0 }
    return y
  }
}
