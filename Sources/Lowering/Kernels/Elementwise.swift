import GraphIR

/// Elementwise ops over flat buffers; views (flatten, inference dropout) emit no code.
extension Emitter {
  mutating func elementwiseOp(_ n: Node) {
    if aliasSource(n, training: training) != nil { return }
    let out = at(n.name)
    let ins = n.args.map(at)
    func arg(_ k: Int, _ i: IExpr) -> FExpr { .load(ins[k].base, .c(ins[k].offset) + i) }
    let value: (IExpr) -> FExpr
    switch n.op {
    case .relu: value = { i in .select(.fgt(arg(0, i), .c(0)), arg(0, i), .c(0)) }
    case .reluGrad: value = { i in .select(.fgt(arg(1, i), .c(0)), arg(0, i), .c(0)) }
    case .add: value = { i in arg(0, i) + arg(1, i) }
    case .dropout(let a), .dropoutGrad(let a):
      // The mask key is the forward dropout's name, so the gradient reapplies the same mask.
      let key = Dropout.key(n.op == .dropout(a) ? n.name : n.args[1])
      let scale = Float(1 / (1 - a.rate))
      value = { i in .select(.dropoutKeep(key: key, index: i, threshold: Dropout.threshold(a.rate)), arg(0, i) * .c(scale), .c(0)) }
    default: return
    }
    body.append(elementwise(out.count) { i in .store(out.base, .c(out.offset) + i, value(i)) })
  }
}
