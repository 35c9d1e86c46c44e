import GraphIR
import Passes

/// Dense layers as GEMMs: Y = X W^T (+ bias, relu), dX = dY W, dW = dY^T X, db = column sums.
/// Both gradients have their B operand contiguous along N and run as register-blocked kernels.
extension Emitter {
  /// Forward layers big enough for the register-blocked kernel compute Y^T = W X^T (B = X^T, contiguous
  /// along the batch) from a transposed copy of X, and the epilogue writes Y with the bias and relu.
  static func transposedForward(batch: Int, features: Int, units: Int, target: Target) -> Bool {
    // A bf16 program's products are all bf16 GEMMs, whatever the batch.
    if target.precision == .bf16 { return true }
    if batch >= target.lanes && batch * features * units >= target.libraryGemmBelow { return true }
    // Self-contained code has no library call for the rest but the dot products.
    return target.selfContained && !dotProductForward(batch: batch, features: features, lanes: target.lanes)
  }

  /// A few rows with long K (batch-1 inference) are vector dot products instead; the rest of the forward
  /// layers stay a library call.
  static func dotProductForward(batch: Int, features: Int, lanes: Int) -> Bool { batch < lanes && features >= 4 * lanes }

  /// What every strategy of a dense layer's forward pass reads: the buffers, the sizes, and the epilogue that
  /// adds the bias, applies a folded batch norm's scale and shift, and the relu.
  struct DenseForward {
    let name: String
    let x: Placement, w: Placement, y: Placement
    let batch: Int, features: Int, units: Int
    let finish: (FExpr, IExpr) -> FExpr
  }

  /// A dense layer's forward pass by one of three strategies: transposed through a tiled GEMM, dot products
  /// along K for a few rows, or a library GEMM with the epilogue after it.
  mutating func denseForward(_ n: Node, _ a: DenseAttrs, relu: Bool) {
    let xd = dims(n.args[0]), u = a.units
    let b = a.bias ? at("\(n.name).bias") : nil, fold = foldOperand(n, scaled: a.scaled)
    func finish(_ v0: FExpr, _ j: IExpr) -> FExpr {
      let biased = b.map { v0 + .load($0.base, .c($0.offset) + j) } ?? v0
      let v = fold.map { biased * .load($0.base, .c($0.offset) + j) + .load($0.base, .c($0.offset + u) + j) } ?? biased
      return relu ? .select(.fgt(v, .c(0)), v, .c(0)) : v
    }
    let d = DenseForward(name: n.name, x: at(n.args[0]), w: at("\(n.name).weight"), y: at(n.name), batch: xd[0], features: xd[1], units: u,
                         finish: finish)
    if let q = a.quantization {
      int8Dense(d, q)
    } else if Self.transposedForward(batch: d.batch, features: d.features, units: u, target: target) {
      denseTransposed(d)
    } else if Self.dotProductForward(batch: d.batch, features: d.features, lanes: lanes) {
      denseDotProducts(d)
    } else {
      denseLibrary(d, epilogue: a.bias || relu || a.scaled)
    }
  }

  /// Few rows, many units: X transposed into scratch, Y^T = W X^T by the tiled GEMM, the epilogue on the way back.
  mutating func denseTransposed(_ d: DenseForward) {
    let (x, w, y, batch, f, u) = (d.x, d.w, d.y, d.batch, d.features, d.units)
    let xT = plan.scratch[d.name]!.offset, yT = xT + f * batch
    body.append(loop("n", batch) { e, r in [e.loop("k", f) { _, k in
      [.store(.arena, .c(xT) + k * batch + r, .load(x.base, .c(x.offset) + r * f + k))]
    }] })
    var gemm = TiledGemm(m: u, n: batch, k: f, a: (w.base, .c(w.offset)), aRow: f, aCol: 1,
                         b: (.arena, .c(xT)), ldb: batch, c: (.arena, .c(yT)), ldc: batch, accumulate: false)
    // A bf16 inference program packs W once per set of weights, not on every call.
    gemm.readA(sharedPairs((w.base, .c(w.offset)), rows: u, k: f, rowStride: f), aRow: (f + 1) / 2)
    body += tiledGemm(gemm)
    body.append(loop("n", batch) { e, r in [e.loop("u", u) { _, j in
      [.store(y.base, .c(y.offset) + r * u + j, d.finish(.load(.arena, .c(yT) + j * batch + r), j))]
    }] })
  }

  /// A few rows (batch-1 inference): dot products along K, four units at a time (four independent
  /// accumulators), each accumulator's lanes then summed in order. The groups of four split into equal
  /// parts for a pool: each part reads its own rows of W, which then stay in its core's cache.
  mutating func denseDotProducts(_ d: DenseForward) {
    let (x, w, y, batch, f, u, lanes) = (d.x, d.w, d.y, d.batch, d.features, d.units, self.lanes)
    let scratch = plan.scratch[d.name]!.offset, full = f / lanes, tail = f % lanes
    let parts = parallelParts(units: u / 4, macs: batch * f * u)
    body.append(loop("n", batch) { e, r in
      let xRow = IExpr.c(x.offset) + r * f
      func units(_ e: inout Emitter, _ u0: IExpr, _ count: Int, part: IExpr) -> [Stmt] {
        let id = e.fresh("dot")
        var out: [Stmt] = (0..<count).map { .vlocal("\(id)_\($0)", .zero) }
        func step(_ k: IExpr, _ l: Int) -> [Stmt] {
          [.vlocal("\(id)_x", .load(x.base, xRow + k, lanes: l))]
            + (0..<count).map { j in
              .vset("\(id)_\(j)", .fma(.load(w.base, .c(w.offset) + (u0 + j) * f + k, lanes: l), .local("\(id)_x"), .local("\(id)_\(j)")))
            }
        }
        out.append(e.loop("k", full) { _, k in step(k * lanes, lanes) })
        if tail > 0 { out += step(.c(full * lanes), tail) }
        for j in 0..<count {
          let (summing, sum) = e.sumLanes("\(id)_\(j)", scratch: scratch, part: part)
          out += summing + [.store(y.base, .c(y.offset) + r * u + u0 + j, d.finish(sum, u0 + j))]
        }
        return out
      }
      var out: [Stmt] = []
      let perPart = u / 4 / parts
      if u / 4 > 0 {
        out += e.inParts(parts, of: "units") { e, part in [e.loop("u", perPart) { e, ub in units(&e, (part * perPart + ub) * 4, 4, part: part) }] }
      }
      if u % 4 > 0 { out += units(&e, .c(u - u % 4), u % 4, part: .c(0)) }
      return out
    })
  }

  /// The library GEMM Y = X W^T, then the epilogue (when there is one) in place.
  mutating func denseLibrary(_ d: DenseForward, epilogue: Bool) {
    let (x, w, y, batch, f, u) = (d.x, d.w, d.y, d.batch, d.features, d.units)
    body.append(.gemm(Gemm(transA: false, transB: true, m: batch, n: u, k: f, a: (x.base, .c(x.offset)), lda: f,
                           b: (w.base, .c(w.offset)), ldb: f, beta: 0, c: (y.base, .c(y.offset)), ldc: u)))
    guard epilogue else { return }
    body.append(loop("n", batch) { e, r in [e.loop("u", u) { _, j in
      let idx = IExpr.c(y.offset) + r * u + j
      return [.store(y.base, idx, d.finish(.load(y.base, idx), j))]
    }] })
  }

  mutating func denseGradInput(_ n: Node) {
    let dy = at(n.args[0]), d = dims(n.args[0]), w = at(n.args[1]), wd = dims(n.args[1]), dx = at(n.name)
    body += tiledGemm(TiledGemm(m: d[0], n: wd[1], k: d[1], a: (dy.base, .c(dy.offset)), aRow: d[1], aCol: 1,
                                b: (w.base, .c(w.offset)), ldb: wd[1], c: (dx.base, .c(dx.offset)), ldc: wd[1], accumulate: false))
  }

  mutating func denseGradWeight(_ n: Node) {
    let dy = at(n.args[0]), d = dims(n.args[0]), x = at(n.args[1]), xd = dims(n.args[1]), dw = at(n.name)
    body += tiledGemm(TiledGemm(m: d[1], n: xd[1], k: d[0], a: (dy.base, .c(dy.offset)), aRow: 1, aCol: d[1],
                                b: (x.base, .c(x.offset)), ldb: xd[1], c: (dw.base, .c(dw.offset)), ldc: xd[1], accumulate: false))
  }

  mutating func denseGradBias(_ n: Node) {
    let dy = at(n.args[0]), d = dims(n.args[0]), db = at(n.name)
    body.append(loop("u", d[1]) { e, j in
      let acc = e.fresh("acc")
      return [.local(acc, .c(0)),
              e.loop("n", d[0]) { _, r in [.set(acc, .local(acc) + .load(dy.base, .c(dy.offset) + r * d[1] + j))] },
              .store(db.base, .c(db.offset) + j, .local(acc))]
    })
  }
}

// MARK: The dense ops' lowerings

extension DenseOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.denseForward(n, attrs, relu: false) }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int {
    let xd = shapes[n.args[0]]!.dims
    // An int8 layer's quads are scratch of its kernel's own (`Emitter.int8Dense`).
    if attrs.quantization != nil { return 0 }
    if Emitter.transposedForward(batch: xd[0], features: xd[1], units: attrs.units, target: target) { return (xd[1] + attrs.units) * xd[0] }
    // The dot products' lanes, for each part of a parallel split.
    return Emitter.dotProductForward(batch: xd[0], features: xd[1], lanes: target.lanes) ? target.lanes * target.parallelParts : 0
  }
}

extension DenseReLUOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.denseForward(n, attrs, relu: true) }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { DenseOp(attrs).scratchFloats(n, shapes, target, training: training) }
}

extension DenseGradInputOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.denseGradInput(n) }
}

extension DenseGradWeightOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.denseGradWeight(n) }
}

extension DenseGradBiasOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.denseGradBias(n) }
}
