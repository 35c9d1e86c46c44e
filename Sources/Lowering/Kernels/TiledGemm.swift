/// A GEMM lowered to register-blocked vector code in the kernel IR instead of a library call, so both
/// back ends render the same micro-kernel for the host's widest vectors, specialised to static shapes.
///
/// C[m x n] = A[m x k] * B[k x n] (+ C when accumulating). B and C are row-major and contiguous along n,
/// the vector dimension; A is read one element at a time with any strides and broadcast to every lane,
/// so a transposed A costs nothing. Summation order is fixed by the shapes alone: results are the same
/// run after run and whatever the thread count.
struct TiledGemm {
  var m: Int, n: Int, k: Int
  /// A[i][p] is at a + i * aRow + p * aCol.
  var a: (Base, IExpr), aRow: Int, aCol: Int
  var b: (Base, IExpr), ldb: Int
  var c: (Base, IExpr), ldc: Int
  var accumulate: Bool
}

/// The register blocking of a micro-kernel: `rows` x `vectors` accumulators, plus one register per B
/// vector and one broadcast, within 32 vector registers; K in panels so B's panel stays in L2 while
/// every row block reuses it.
struct GemmBlocking: Equatable {
  var rows: Int, vectors: Int, kPanel: Int

  /// Four vectors (64 columns) by six rows where n allows, fewer vectors and more rows for narrow C.
  /// Row counts that divide m are preferred (down to two thirds of the maximum), and so are K panels that
  /// divide k: each remainder would be one more copy of the micro-kernel for the JIT to compile.
  static func choose(m: Int, n: Int, k: Int) -> GemmBlocking {
    let vectors = max(1, min(4, (n + vectorLanes - 1) / vectorLanes))
    let most = min(m, vectors == 4 ? 6 : vectors == 3 ? 8 : vectors == 2 ? 14 : 28)
    let rows = (max(1, most * 2 / 3)...most).reversed().first { m % $0 == 0 } ?? most
    let least = (k + 383) / 384
    let panels = (least...max(least, least * 2)).first { k % $0 == 0 && k / $0 >= 64 } ?? least
    return GemmBlocking(rows: rows, vectors: vectors, kPanel: (k + panels - 1) / panels)
  }
}

extension Emitter {
  mutating func tiledGemm(_ g: TiledGemm) -> [Stmt] {
    // Below about a million multiply-adds a library call costs less than the JIT time of the kernels.
    if g.m * g.n * g.k < 1 << 20, g.aCol == 1 || g.aRow == 1 {
      let rowMajor = g.aCol == 1
      return [.gemm(Gemm(transA: !rowMajor, transB: false, m: g.m, n: g.n, k: g.k, a: g.a, lda: rowMajor ? g.aRow : g.aCol,
                         b: g.b, ldb: g.ldb, beta: g.accumulate ? 1 : 0, c: g.c, ldc: g.ldc))]
    }
    let blk = GemmBlocking.choose(m: g.m, n: g.n, k: g.k)
    let panels = (g.k + blk.kPanel - 1) / blk.kPanel
    let kc = (g.k + panels - 1) / panels
    var out: [Stmt] = []
    // With several panels every panel accumulates, so C starts at zero unless the GEMM accumulates.
    if panels > 1, !g.accumulate {
      out.append(loop("r", g.m) { e, r in [e.elementwise(g.n) { i in .store(g.c.0, g.c.1 + r * g.ldc + i, .c(0)) }] })
    }
    let load = g.accumulate || panels > 1
    // The full panels in a loop (one copy of the code), then the shorter last panel.
    let full = g.k / kc, last = g.k % kc
    if full == 1 {
      out += columnBlocks(g, blk, k0: .c(0), kc: kc, load: load)
    } else {
      out.append(loop("kp", full) { e, kp in e.columnBlocks(g, blk, k0: kp * kc, kc: kc, load: load) })
    }
    if last > 0 { out += columnBlocks(g, blk, k0: .c(full * kc), kc: last, load: load) }
    return out
  }

  /// Every column block of one K panel: full blocks in a loop, the remaining columns with fewer (and masked) vectors.
  mutating func columnBlocks(_ g: TiledGemm, _ blk: GemmBlocking, k0: IExpr, kc: Int, load: Bool) -> [Stmt] {
    let width = blk.vectors * vectorLanes
    var out: [Stmt] = []
    if g.n / width > 0 {
      out.append(loop("nb", g.n / width) { e, nb in
        e.rowBlocks(g, blk, n0: nb * width, lanes: Array(repeating: vectorLanes, count: blk.vectors), k0: k0, kc: kc, load: load)
      })
    }
    let rest = g.n % width
    if rest > 0 {
      var lanes = Array(repeating: vectorLanes, count: rest / vectorLanes)
      if rest % vectorLanes > 0 { lanes.append(rest % vectorLanes) }
      out += rowBlocks(g, blk, n0: .c(g.n - rest), lanes: lanes, k0: k0, kc: kc, load: load)
    }
    return out
  }

  /// Every row block of one column block: full blocks in a loop, the remaining rows as a smaller kernel.
  mutating func rowBlocks(_ g: TiledGemm, _ blk: GemmBlocking, n0: IExpr, lanes: [Int], k0: IExpr, kc: Int, load: Bool) -> [Stmt] {
    var out: [Stmt] = []
    if g.m / blk.rows > 0 {
      out.append(loop("mb", g.m / blk.rows) { e, mb in
        e.microKernel(g, m0: mb * blk.rows, rows: blk.rows, n0: n0, lanes: lanes, k0: k0, kc: kc, load: load)
      })
    }
    if g.m % blk.rows > 0 {
      out += microKernel(g, m0: .c(g.m - g.m % blk.rows), rows: g.m % blk.rows, n0: n0, lanes: lanes, k0: k0, kc: kc, load: load)
    }
    return out
  }

  /// C[m0 ..< m0+rows][n0 ...] over k0 ..< k0+kc, in registers: per k, one load per B vector, one
  /// broadcast per row and rows x vectors fused multiply-adds.
  mutating func microKernel(_ g: TiledGemm, m0: IExpr, rows: Int, n0: IExpr, lanes: [Int], k0: IExpr, kc: Int, load: Bool) -> [Stmt] {
    let id = fresh("t")
    func acc(_ r: Int, _ v: Int) -> String { "\(id)_c\(r)_\(v)" }
    func cAt(_ r: Int, _ v: Int) -> IExpr { g.c.1 + (m0 + r) * g.ldc + n0 + v * vectorLanes }
    var out: [Stmt] = []
    for r in 0..<rows {
      for (v, l) in lanes.enumerated() { out.append(.vlocal(acc(r, v), load ? .load(g.c.0, cAt(r, v), lanes: l) : .zero)) }
    }
    out.append(loop("k", kc) { _, kk in
      let p = kk + k0
      var body: [Stmt] = []
      for (v, l) in lanes.enumerated() {
        body.append(.vlocal("\(id)_b\(v)", .load(g.b.0, g.b.1 + p * g.ldb + n0 + v * vectorLanes, lanes: l)))
      }
      for r in 0..<rows {
        body.append(.vlocal("\(id)_a\(r)", .broadcast(.load(g.a.0, g.a.1 + (m0 + r) * g.aRow + p * g.aCol))))
        for v in lanes.indices { body.append(.vset(acc(r, v), .fma(.local("\(id)_a\(r)"), .local("\(id)_b\(v)"), .local(acc(r, v))))) }
      }
      return body
    })
    for r in 0..<rows {
      for (v, l) in lanes.enumerated() { out.append(.vstore(g.c.0, cAt(r, v), .local(acc(r, v)), lanes: l)) }
    }
    return out
  }

  /// Stores vector `acc` to the 16 floats at arena[scratch] and adds its lanes in order, one local per
  /// add (short statements for both renderers): the statements and the sum.
  mutating func sumLanes(_ acc: String, scratch: Int) -> ([Stmt], FExpr) {
    var out: [Stmt] = [.vstore(.arena, .c(scratch), .local(acc), lanes: vectorLanes)]
    var sum = FExpr.load(.arena, .c(scratch))
    for l in 1..<vectorLanes {
      let partial = fresh("sum")
      out.append(.local(partial, sum + .load(.arena, .c(scratch + l))))
      sum = .local(partial)
    }
    return (out, sum)
  }
}
