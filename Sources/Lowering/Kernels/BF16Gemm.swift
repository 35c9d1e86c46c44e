/// A bf16 program's GEMMs (`Precision.bf16`): both operands rounded and packed in pairs along K, then the micro-kernels
/// of `TiledGemm` over the pairs with the bf16 dot product, accumulating in f32.
extension Emitter {
  /// A and B packed into scratch of the kernel's own (`tailScratch`; B not when it comes packed, `bPairs`), then the
  /// micro-kernels over the pairs. An odd K's last pair has a zero high half.
  mutating func bf16Gemm(_ g: TiledGemm) -> [Stmt] {
    let pairs = (g.k + 1) / 2
    let blk = GemmBlocking.choose(m: g.m, n: g.n, k: pairs, target: target)
    gemms.append(GemmChoice(node: node, m: g.m, n: g.n, k: g.k, aRow: g.aRow, aCol: g.aCol, ldb: g.ldb, ldc: g.ldc,
                            rows: blk.rows, vectors: blk.vectors, kPanel: blk.kPanel, calls: g.calls))
    var packed = g, out: [Stmt] = []
    if !g.bPairs {
      let b = tailScratch(pairs * g.n), lanes = self.lanes
      out += packRowPairs(k: g.k, count: g.n, from: g.b.0, into: b) { p, j in
        g.b.1 + (g.packedVectors.map { GemmBlocking.packedIndex(p, j, k: g.k, width: $0 * lanes) } ?? p * g.ldb + j)
      }
      (packed.b, packed.ldb) = ((.arena, b), g.n)
    }
    if !g.aPairs {
      let a = tailScratch(g.m * pairs), (code, aRow, aCol) = packA(g, into: a)
      out += code
      (packed.a, packed.aRow, packed.aCol) = ((.arena, a), aRow, aCol)
    }
    (packed.k, packed.packedVectors, packed.pairs) = (pairs, nil, true)
    out += blockedGemm(packed, blk)
    // The micro-kernels get the register file to themselves (see `Stmt.region`).
    return [.region(fresh("gemm"), out)]
  }

  /// A's pairs at `into` of the arena, and their layout (words between rows, between pairs): rows contiguous along K
  /// as rows (`packRowsAlongK`), columns contiguous across K as interleaved row pairs, any other strides element by
  /// element.
  mutating func packA(_ g: TiledGemm, into a: IExpr) -> (code: [Stmt], aRow: Int, aCol: Int) {
    let pairs = (g.k + 1) / 2
    if g.aCol == 1 { return (packRowsAlongK(g.a, rows: g.m, k: g.k, rowStride: g.aRow, into: a), pairs, 1) }
    if g.aRow == 1 { return (packRowPairs(k: g.k, count: g.m, from: g.a.0, into: a) { p, i in g.a.1 + p * g.aCol + i }, 1, g.m) }
    func element(_ i: IExpr, _ p: IExpr) -> FExpr { .load(g.a.0, g.a.1 + i * g.aRow + p * g.aCol) }
    let code = loop("i", g.m) { e, i in
      var row = [e.loop("q", g.k / 2) { _, q in [.store(.arena, a + i * pairs + q, .bf16Pair(element(i, q * 2), element(i, q * 2 + 1)))] }]
      if g.k % 2 == 1 { row.append(.store(.arena, a + i * pairs + g.k / 2, .bf16Pair(element(i, .c(g.k - 1)), .c(0)))) }
      return row
    }
    return ([code], pairs, 1)
  }

  /// Pairs along K of a matrix whose K rows are runs of `count` contiguous floats (row p's element j at `at(p, j)`
  /// in `base`): word (q, j), at `into` + q * count + j in buffer `out`, pairs rows 2q and 2q + 1; an odd K's last row is paired
  /// with zeros. Vectors along the rows.
  mutating func packRowPairs(k: Int, count: Int, from base: Base, into: IExpr, in out: Base = .arena, _ at: @escaping (IExpr, IExpr) -> IExpr) -> [Stmt] {
    var code = [loop("q", k / 2) { e, q in
      e.vectorRuns(count) { _, j, l in
        [.vstore(out, into + q * count + j, .bf16Pair(.load(base, at(q * 2, j), lanes: l), .load(base, at(q * 2 + 1, j), lanes: l)), lanes: l)]
      }
    }]
    if k % 2 == 1 {
      code += vectorRuns(count) { _, j, l in [.vstore(out, into + (k / 2) * count + j, .bf16Pair(.load(base, at(.c(k - 1), j), lanes: l), .zero), lanes: l)] }
    }
    return code
  }

  /// `rows` rows of K floats, contiguous along K and `rowStride` apart from `a`, in pairs, row i's at `into` + i * pairs
  /// in buffer `out`: each vector of pairs from two vectors of the row (`VExpr.bf16Pack`); the row's last pairs from
  /// masked loads, zeros past K.
  mutating func packRowsAlongK(_ a: (Base, IExpr), rows: Int, k: Int, rowStride: Int, into: IExpr, in out: Base = .arena) -> [Stmt] {
    let lanes = self.lanes, pairs = (k + 1) / 2, full = pairs / lanes, rest = pairs % lanes
    return [loop("i", rows) { e, i in
      let row = a.1 + i * rowStride
      func pack(_ first: IExpr, elements: Int) -> VExpr {
        let second: VExpr = elements > lanes ? .load(a.0, row + first + lanes, lanes: elements - lanes) : .zero
        return .bf16Pack(.load(a.0, row + first, lanes: min(lanes, elements)), second)
      }
      var code: [Stmt] = []
      if full > 0 {
        code.append(e.loop("v", full) { _, v in [.vstore(out, into + i * pairs + v * lanes, pack(v * (2 * lanes), elements: 2 * lanes), lanes: lanes)] })
      }
      if rest > 0 {
        code.append(.vstore(out, into + i * pairs + full * lanes, pack(.c(full * 2 * lanes), elements: k - full * 2 * lanes), lanes: rest))
      }
      return code
    }]
  }

  /// In a bf16 program, a GEMM operand the kernel's GEMMs share (the weights) packed in pairs once, by `pack(into,
  /// buffer)`: in a training step here, before the loops that run them, at inference once per set of weights
  /// (`prepare`, into the prepared buffer). `count` words; where they are. Nil in f32.
  mutating func packedOnce(_ count: Int, _ pack: (inout Emitter, IExpr, Base) -> [Stmt]) -> (Base, IExpr)? {
    guard target.precision == .bf16 else { return nil }
    guard training else {
      let at = IExpr.c(prepared(count))
      prepare += pack(&self, at, .prepared)
      return (.prepared, at)
    }
    let at = tailScratch(count)
    body += pack(&self, at, .arena)
    return (.arena, at)
  }

  /// `packedOnce` of `rows` rows of K floats contiguous along K, `rowStride` apart (row i's pairs at + i * (K + 1) / 2).
  mutating func sharedPairs(_ a: (Base, IExpr), rows: Int, k: Int, rowStride: Int) -> (Base, IExpr)? {
    packedOnce(rows * ((k + 1) / 2)) { e, at, out in e.packRowsAlongK(a, rows: rows, k: k, rowStride: rowStride, into: at, in: out) }
  }
}
