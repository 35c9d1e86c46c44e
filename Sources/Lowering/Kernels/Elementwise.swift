import GraphIR
import Passes

/// Elementwise ops over flat buffers: the activations (from their one definition), add, dropout; views
/// (flatten, inference dropout) emit no code.
extension Emitter {
  /// `out[i] = value(i)` over the node's output.
  mutating func elementwise(_ n: Node, _ value: (IExpr, [(IExpr) -> FExpr]) -> FExpr) {
    let out = at(n.name)
    let args: [(IExpr) -> FExpr] = n.args.map(at).map { p in { i in .load(p.base, .c(p.offset) + i) } }
    body.append(elementwise(out.count) { i in .store(out.base, .c(out.offset) + i, value(i, args)) })
  }

  /// Dropout's mask and scale applied to operand 0; `key` names the forward dropout, so the gradient reapplies its mask.
  mutating func dropout(_ n: Node, _ a: DropoutAttrs, key name: String) {
    let key = Dropout.key(name), scale = Float(1 / (1 - a.rate))
    elementwise(n) { i, x in .select(.dropoutKeep(key: key, index: i, threshold: Dropout.threshold(a.rate)), x[0](i) * .c(scale), .c(0)) }
  }
}

extension Lowerable where Self: Activation {
  func lower(_ n: Node, _ e: inout Emitter) { e.elementwise(n) { i, x in value(x[0](i)) } }
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

extension AddOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.elementwise(n) { i, x in x[0](i) + x[1](i) } }
}

extension DropoutOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    if e.training { e.dropout(n, attrs, key: n.name) }
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
