import GraphIR
import Passes

/// Elementwise ops over flat buffers: the activations (from their one definition), add, dropout; views
/// (flatten, inference dropout) emit no code.
extension Emitter {
  /// `out[i] = value(i)` over the node's output, each subexpression the formula repeats computed once.
  mutating func elementwise(_ n: Node, _ value: (IExpr, [(IExpr) -> FExpr]) -> FExpr) {
    let out = at(n.name)
    let args: [(IExpr) -> FExpr] = n.args.map(at).map { p in { i in .load(p.base, .c(p.offset) + i) } }
    body += inRanges(out.count) { e, first, count in
      [e.loop("i", count) { e, v in
        let i = v + first
        return e.sharedStore(out.base, .c(out.offset) + i, value(i, args))
      }]
    }
  }

  /// Stores `value` at base[at], each subexpression it repeats (or nests deeply) bound to a local first: short
  /// statements for both renderers.
  mutating func sharedStore(_ base: Base, _ at: IExpr, _ value: FExpr) -> [Stmt] {
    let (bindings, v) = SubexpressionSharing.share(value) { fresh("t") }
    return bindings + [.store(base, at, v)]
  }

  /// `body(first, count)` over 0..<total: at inference, when the pass is large, in equal parts of whole cache
  /// lines for the pool (the rest after them, on the calling thread); else once over everything.
  mutating func inRanges(_ total: Int, granule: Int = 64 / MemoryLayout<Float>.size, work: Int? = nil,
                         _ body: (inout Emitter, IExpr, Int) -> [Stmt]) -> [Stmt] {
    let parts = total >= granule * target.parallelParts ? parallelParts(macs: work ?? total * Self.elementwiseWeight) : 1
    guard parts > 1 else { return body(&self, .c(0), total) }
    let each = total / parts / granule * granule
    var out = inParts(parts, of: "elements") { e, part in body(&e, part * each, each) }
    if total > each * parts { out += body(&self, .c(each * parts), total - each * parts) }
    return out
  }

  /// `body(q)` for each of `count` planes (or rows), split like `inRanges` when `work` (multiply-add
  /// equivalents of the whole pass) is large.
  mutating func planeLoop(_ hint: String, _ count: Int, work: Int, _ body: (inout Emitter, IExpr) -> [Stmt]) -> [Stmt] {
    inRanges(count, granule: 1, work: work) { e, first, n in [e.loop(hint, n) { e, v in body(&e, v + first) }] }
  }

  /// An elementwise pass's work in multiply-add equivalents per element, for `Target.parallelWorkBelow`: moving
  /// a float through memory costs about what a few multiply-adds of a GEMM do.
  static let elementwiseWeight = 4

  /// Dropout's mask and scale applied to operand 0; `key` names the forward dropout, so the gradient
  /// reapplies its mask. The RNG is `Dropout`'s (stream base per kernel, one draw per element), in 64-bit
  /// statements of the kernel IR.
  mutating func dropout(_ n: Node, _ a: DropoutAttrs, key name: String) {
    let out = at(n.name), x = at(n.args[0])
    let scale = Float(1 / (1 - a.rate)), threshold = UExpr.c(Dropout.threshold(a.rate))
    let (keyed, keyStmts) = mix(.xor(.seed, .c(Dropout.key(name))))
    let (base, baseStmts) = mix(.add(keyed, .step))
    body += keyStmts + baseStmts
    body.append(loop("i", out.count) { e, i in
      let (draw, stmts) = e.mix(.add(base, .mul(.index(i), .c(Dropout.golden))))
      let keep = Cond.uge(.shr(draw, Dropout.drawShift), threshold)
      return stmts + [.store(out.base, .c(out.offset) + i, .select(keep, .load(x.base, .c(x.offset) + i) * .c(scale), .c(0)))]
    })
  }

  /// `Dropout.mix(z)` as 64-bit locals, one per step; returns the result and the statements declaring it.
  mutating func mix(_ z: UExpr) -> (UExpr, [Stmt]) {
    // Each step reads its input twice, so the input is a local first.
    let input = fresh("z")
    var value = UExpr.local(input), stmts: [Stmt] = [.ulocal(input, z)]
    for (shift, multiplier) in Dropout.mixSteps {
      let name = fresh("z")
      let shifted = UExpr.xor(value, .shr(value, shift))
      stmts.append(.ulocal(name, multiplier.map { .mul(shifted, .c($0)) } ?? shifted))
      value = .local(name)
    }
    return (value, stmts)
  }
}

extension Lowerable where Self: Activation {
  func lower(_ n: Node, _ e: inout Emitter) { e.elementwise(n) { i, x in value(x[0](i)) } }
  /// A pass over every element: the layout is its operand's.
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule { .shared([0], gains: false) }
}

extension Lowerable where Self: ActivationGradient {
  func lower(_ n: Node, _ e: inout Emitter) { e.elementwise(n) { i, x in activation.derivative(dy: x[0](i), saved: x[1](i)) } }
}

extension ReLUOp: Lowerable {}
extension ReLUGradOp: Lowerable {}
extension LeakyReLUOp: Lowerable {}
extension LeakyReLUGradOp: Lowerable {}
extension SigmoidOp: Lowerable {}
extension SigmoidGradOp: Lowerable {}
extension TanhOp: Lowerable {}
extension TanhGradOp: Lowerable {}
extension ClipOp: Lowerable {}
extension ClipGradOp: Lowerable {}
extension HardSigmoidOp: Lowerable {}
extension HardSigmoidGradOp: Lowerable {}
extension HardSwishOp: Lowerable {}
extension HardSwishGradOp: Lowerable {}
extension SiLUOp: Lowerable {}
extension SiLUGradOp: Lowerable {}
extension GELUOp: Lowerable {}
extension GELUGradOp: Lowerable {}

extension AddOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    guard e.dims(n.args[0]) == e.dims(n.args[1]) else { return e.gatedProduct(n.name, n.args[0], n.args[1], VExpr.add) }
    e.elementwise(n) { i, x in x[0](i) + x[1](i) }
  }
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule { .shared([0, 1], gains: false) }
}

extension DropoutOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    if e.trains(n) { e.dropout(n, attrs, key: n.name) }
  }
  /// The identity at inference: the value is its operand.
  func aliasedOperand(training: Bool) -> Int? { training ? nil : 0 }
}

extension DropoutGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.dropout(n, attrs, key: n.args[1]) }
}

extension FlattenOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {}
  /// A view: the data is unchanged.
  func aliasedOperand(training: Bool) -> Int? { 0 }
}

extension FlattenGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {}
  func aliasedOperand(training: Bool) -> Int? { 0 }
}
