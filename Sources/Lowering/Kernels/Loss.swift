import GraphIR
import Passes

/// Softmax, cross-entropy and their gradients, row by row with the max subtracted for stability.
extension Emitter {
  /// Declares `m` (row max) and `s` (sum of exp(x - m)) for row `r` of a [N, K] buffer.
  private mutating func rowStats(_ x: Placement, _ k: Int, _ r: IExpr) -> (m: String, s: String, stmts: [Stmt]) {
    let m = fresh("m"), s = fresh("s")
    let row = IExpr.c(x.offset) + r * k
    return (m, s, [
      .local(m, .load(x.base, row)),
      loop("k", k) { _, j in [.set(m, .max(.local(m), .load(x.base, row + j)))] },
      .local(s, .c(0)),
      loop("k", k) { _, j in [.set(s, .local(s) + .exp(.load(x.base, row + j) - .local(m)))] },
    ])
  }

  mutating func softmax(_ n: Node) {
    let x = at(n.args[0]), d = dims(n.args[0]), y = at(n.name)
    body.append(loop("n", d[0]) { e, r in
      let (m, s, stats) = e.rowStats(x, d[1], r)
      return stats + [e.loop("k", d[1]) { _, j in
        [.store(y.base, .c(y.offset) + r * d[1] + j, .exp(.load(x.base, .c(x.offset) + r * d[1] + j) - .local(m)) / .local(s))]
      }]
    })
  }

  mutating func softmaxGrad(_ n: Node) {
    let dy = at(n.args[0]), y = at(n.args[1]), d = dims(n.args[1]), dx = at(n.name)
    body.append(loop("n", d[0]) { e, r in
      let dot = e.fresh("dot")
      func a(_ p: Placement, _ j: IExpr) -> FExpr { .load(p.base, .c(p.offset) + r * d[1] + j) }
      return [.local(dot, .c(0)),
              e.loop("k", d[1]) { _, j in [.set(dot, .local(dot) + a(dy, j) * a(y, j))] },
              e.loop("k", d[1]) { _, j in [.store(dx.base, .c(dx.offset) + r * d[1] + j, a(y, j) * (a(dy, j) - .local(dot)))] }]
    })
  }

  mutating func crossEntropy(_ n: Node) {
    let z = at(n.args[0]), d = dims(n.args[0]), loss = at(n.name)
    let total = fresh("total")
    body.append(.local(total, .c(0)))
    body.append(loop("n", d[0]) { e, r in
      let (m, s, stats) = e.rowStats(z, d[1], r)
      return stats + [.set(total, .local(total) + (.local(m) + .log(.local(s)) - .load(z.base, .c(z.offset) + r * d[1] + .label(r))))]
    })
    body.append(.store(loss.base, .c(loss.offset), .local(total) / .c(Float(d[0]))))
  }

  mutating func crossEntropyGrad(_ n: Node) {
    let z = at(n.args[0]), d = dims(n.args[0]), dz = at(n.name)
    body.append(loop("n", d[0]) { e, r in
      let (m, s, stats) = e.rowStats(z, d[1], r)
      return stats + [e.loop("k", d[1]) { _, j in
        let p = FExpr.exp(.load(z.base, .c(z.offset) + r * d[1] + j) - .local(m)) / .local(s)
        return [.store(dz.base, .c(dz.offset) + r * d[1] + j, .select(.ieq(j, .label(r)), p - .c(1), p) / .c(Float(d[0])))]
      }]
    })
  }
}

// MARK: The softmax and loss ops' lowerings

extension SoftmaxOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.softmax(n) }
}

extension SoftmaxGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.softmaxGrad(n) }
}

extension CrossEntropyOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.crossEntropy(n) }
}

extension CrossEntropyGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.crossEntropyGrad(n) }
}
