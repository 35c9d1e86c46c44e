import GraphIR
import Passes

/// Batch normalisation and its gradients: passes per channel over its N x H x W elements. Sums run in
/// vectors (`channelSum`): a fixed order, the same bits on every run and thread count, within rounding of
/// the reference kernels' order (n, then h and w).
extension Emitter {
  /// The operand's element at (n, c, i) of a [N, C, H*W] view, and the loops visiting channel `c` in order.
  private mutating func overChannel(_ d: [Int], _ c: IExpr, _ body: (inout Emitter, IExpr) -> [Stmt]) -> Stmt {
    let (channels, plane) = (d[1], d.dropFirst(2).reduce(1, *))
    return loop("n", d[0]) { e, n in e.small("i", plane) { e, i in body(&e, (n * channels + c) * plane + i) } }
  }

  private func load(_ value: String, _ i: IExpr) -> FExpr {
    let p = at(value)
    return .load(p.base, .c(p.offset) + i)
  }

  /// Loads of a placement's element i (scalar) and of `lanes` from it, for the closures `channelSum` takes.
  private static func element(_ p: Placement) -> (IExpr) -> FExpr { { .load(p.base, .c(p.offset) + $0) } }
  private static func lanes(_ p: Placement) -> (IExpr, Int) -> VExpr { { .load(p.base, .c(p.offset) + $0, lanes: $1) } }

  /// Declares `total` = the sum over channel `c` of `term`, given as a vector of the lanes from an element
  /// index and as a scalar at one: each plane's full vectors add into one vector of partial sums (a chain
  /// `lanes` times shorter than a scalar sum's, which waits on every add), its last plane % lanes elements
  /// into a scalar; the lanes are then added in order (through `part`'s `lanes` floats of the node's scratch).
  private mutating func channelSum(_ d: [Int], _ c: IExpr, _ n: Node, part: IExpr, into total: String,
                                   vector: (IExpr, Int) -> VExpr, scalar: (IExpr) -> FExpr) -> [Stmt] {
    let (channels, plane, lanes) = (d[1], d.dropFirst(2).reduce(1, *), self.lanes)
    let acc = fresh("acc"), tail = fresh("tail"), full = plane / lanes * lanes
    var out: [Stmt] = [.vlocal(acc, .zero), .local(tail, .c(0))]
    out.append(loop("n", d[0]) { e, b in
      let base = (b * channels + c) * plane
      var inner: [Stmt] = []
      if full > 0 { inner.append(e.loop("v", plane / lanes) { _, v in [.vset(acc, .add(.local(acc), vector(base + v * lanes, lanes)))] }) }
      if plane > full { inner.append(e.loop("i", plane - full) { _, i in [.set(tail, .local(tail) + scalar(base + full + i))] }) }
      return inner
    })
    let (summing, sum) = sumLanes(acc, scratch: plan.scratch[n.name]!.offset, part: part)
    return out + summing + [.local(total, sum + .local(tail))]
  }

  /// `body(c, part)` for each channel of a [N, C, ...] pass, in order; when the pass is large, the channels split
  /// into equal parts over the pool (each part's sums through its own scratch): every channel's arithmetic is
  /// the same whichever part or thread computes it.
  private mutating func channelLoop(_ d: [Int], _ body: (inout Emitter, IExpr, IExpr) -> [Stmt]) -> [Stmt] {
    let parts = parallelParts(units: d[1], macs: d.reduce(1, *) * Self.elementwiseWeight), per = d[1] / parts
    return inParts(parts, of: "channels") { e, part in [e.loop("c", per) { e, cv in body(&e, cv + part * per, part) }] }
  }

  /// 1 / sqrt(variance + eps), as `BatchNorm.inverseStd` computes it.
  private func inverseStd(_ variance: FExpr, _ eps: Double) -> FExpr { .c(1) / .sqrt(variance + .c(Float(eps))) }

  /// Training: the batch's mean and biased variance per channel (stored as `NAME.mean`, `NAME.var`), then
  /// (x - mean) * (gamma * invstd) + beta. Inference: the same with the running statistics.
  mutating func batchNorm(_ n: Node, _ a: BatchNormAttrs) {
    let x = n.args[0], d = dims(x), y = at(n.name)
    let count = Float(BatchNorm.elementsPerChannel(d))
    body += channelLoop(d) { e, c, part in
      let mu = e.fresh("mean"), variance = e.fresh("var"), scale = e.fresh("scale")
      var stmts: [Stmt]
      if e.trains(n) {
        let s = e.fresh("sum"), q = e.fresh("squares")
        let (xs, xv) = (Self.element(e.at(x)), Self.lanes(e.at(x)))
        stmts = e.channelSum(d, c, n, part: part, into: s, vector: xv, scalar: xs)
        stmts.append(.local(mu, .local(s) / .c(count)))
        // The second pass (squared deviations from the mean): no cancellation, as the reference.
        stmts += e.channelSum(d, c, n, part: part, into: q, vector: { i, l in
          let deviation = VExpr.sub(xv(i, l), .broadcast(.local(mu)))
          return .mul(deviation, deviation)
        }, scalar: { (xs($0) - .local(mu)) * (xs($0) - .local(mu)) })
        stmts.append(.local(variance, .local(q) / .c(count)))
        for (suffix, v) in [("mean", mu), ("var", variance)] {
          let p = e.at("\(n.name).\(suffix)")
          stmts.append(.store(p.base, .c(p.offset) + c, .local(v)))
        }
      } else {
        stmts = [.local(mu, e.load("\(n.name).running_mean", c)), .local(variance, e.load("\(n.name).running_var", c))]
      }
      let gamma = a.affine ? e.load("\(n.name).weight", c) : .c(1)
      stmts.append(.local(scale, gamma * e.inverseStd(.local(variance), a.eps)))
      let shift = a.affine ? e.load("\(n.name).bias", c) : .c(0)
      stmts.append(e.overChannel(d, c) { e, i in [.store(y.base, .c(y.offset) + i, (e.load(x, i) - .local(mu)) * .local(scale) + shift)] })
      return stmts
    }
  }

  /// An inference batch norm folded into the layer before it: row 0 the scale gamma * invstd, row 1 the
  /// shift beta - running_mean * scale, per channel (as the reference kernel of `batchnorm_fold`).
  mutating func batchNormFold(_ n: Node, _ a: BatchNormFoldAttrs) {
    let y = at(n.name), channels = a.channels
    body.append(loop("c", channels) { e, c in
      let scale = e.fresh("scale")
      let gamma = a.norm.affine ? e.load("\(n.name).weight", c) : .c(1)
      let beta = a.norm.affine ? e.load("\(n.name).bias", c) : .c(0)
      return [.local(scale, gamma * e.inverseStd(e.load("\(n.name).running_var", c), a.norm.eps)),
              .store(y.base, .c(y.offset) + c, .local(scale)),
              .store(y.base, .c(y.offset + channels) + c, beta - e.load("\(n.name).running_mean", c) * .local(scale))]
    })
  }

  /// Per channel: invstd and the mean as locals, and sum(dy * xhat) (and sum(dy) with `withSum`) into
  /// the locals named; returns the statements and invstd's name.
  private mutating func gradientSums(_ n: Node, _ a: BatchNormAttrs, _ c: IExpr, part: IExpr, sumX sx: String, sum s: String?) -> ([Stmt], String) {
    let (dy, x, mean, variance) = (n.args[0], n.args[1], n.args[2], n.args[3]), d = dims(x)
    let invstd = fresh("invstd"), mu = fresh("mean")
    var out: [Stmt] = [.local(invstd, inverseStd(load(variance, c), a.eps)), .local(mu, load(mean, c))]
    let (dys, dyv, xs, xv) = (Self.element(at(dy)), Self.lanes(at(dy)), Self.element(at(x)), Self.lanes(at(x)))
    if let s { out += channelSum(d, c, n, part: part, into: s, vector: dyv, scalar: dys) }
    out += channelSum(d, c, n, part: part, into: sx, vector: { i, l in
      .mul(dyv(i, l), .mul(.sub(xv(i, l), .broadcast(.local(mu))), .broadcast(.local(invstd))))
    }, scalar: { dys($0) * ((xs($0) - .local(mu)) * .local(invstd)) })
    return (out, invstd)
  }

  /// gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)). Scaled (affine): gamma is operand 4 and the
  /// two sums, the bias and weight gradients, operands 5 and 6; unscaled, the sums are taken here.
  mutating func batchNormGradInput(_ n: Node, _ a: BatchNormAttrs, scaled: Bool) {
    let (dy, x, mean) = (n.args[0], n.args[1], n.args[2]), d = dims(x), dx = at(n.name)
    let count = Float(BatchNorm.elementsPerChannel(d))
    body += channelLoop(d) { e, c, part in
      let s = e.fresh("sum"), sx = e.fresh("sum_x")
      var stmts: [Stmt], invstd: String
      if scaled {
        invstd = e.fresh("invstd")
        stmts = [.local(invstd, e.inverseStd(e.load(n.args[3], c), a.eps)), .local(s, e.load(n.args[5], c)), .local(sx, e.load(n.args[6], c))]
      } else {
        (stmts, invstd) = e.gradientSums(n, a, c, part: part, sumX: sx, sum: s)
      }
      let scale = e.fresh("scale"), meanDy = e.fresh("mean_dy"), meanDyX = e.fresh("mean_dy_x")
      let mu = e.load(mean, c)
      return stmts + [
        .local(scale, (scaled ? e.load(n.args[4], c) : .c(1)) * .local(invstd)),
        .local(meanDy, .local(s) / .c(count)), .local(meanDyX, .local(sx) / .c(count)),
        e.overChannel(d, c) { e, i in [
          .store(dx.base, .c(dx.offset) + i,
                 .local(scale) * (e.load(dy, i) - .local(meanDy) - (e.load(x, i) - mu) * .local(invstd) * .local(meanDyX))),
        ] },
      ]
    }
  }

  /// sum(dy * xhat) per channel.
  mutating func batchNormGradWeight(_ n: Node, _ a: BatchNormAttrs) {
    let dw = at(n.name)
    body += channelLoop(dims(n.args[1])) { e, c, part in
      let sx = e.fresh("sum_x")
      return e.gradientSums(n, a, c, part: part, sumX: sx, sum: nil).0 + [.store(dw.base, .c(dw.offset) + c, .local(sx))]
    }
  }

  /// sum(dy) per channel.
  mutating func batchNormGradBias(_ n: Node) {
    let dy = n.args[0], d = dims(dy), db = at(n.name)
    body += channelLoop(d) { e, c, part in
      let s = e.fresh("sum")
      return e.channelSum(d, c, n, part: part, into: s, vector: Self.lanes(e.at(dy)), scalar: Self.element(e.at(dy))) + [.store(db.base, .c(db.offset) + c, .local(s))]
    }
  }
}

/// The vectors of partial sums `channelSum` adds up, one per part of a split pass, in the arena.
func channelSumScratch(_ target: Target) -> Int { target.lanes * target.parallelParts }

extension BatchNormOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.batchNorm(n, attrs) }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { channelSumScratch(target) }
  func check(_ n: Node, _ shapes: ShapeTable, training: Bool) -> String? {
    guard training, let x = shapes[n.args[0]], BatchNorm.elementsPerChannel(x.dims) <= 1 else { return nil }
    return "batchnorm '\(n.name)' needs more than one value per channel in training, and its input \(x) has one per shard; use a larger batch or fewer shards"
  }
}

extension BatchNormFoldOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.batchNormFold(n, attrs) }
}

extension BatchNormGradInputOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.batchNormGradInput(n, attrs, scaled: true) }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { channelSumScratch(target) }
}

extension BatchNormGradInputUnscaledOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.batchNormGradInput(n, attrs, scaled: false) }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { channelSumScratch(target) }
}

extension BatchNormGradWeightOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.batchNormGradWeight(n, attrs) }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { channelSumScratch(target) }
}

extension BatchNormGradBiasOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.batchNormGradBias(n) }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { channelSumScratch(target) }
}
