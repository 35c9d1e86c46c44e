import GraphIR

/// A GEMM lowered to register-blocked vector code in the kernel IR instead of a library call, so both
/// back ends render the same micro-kernel for the target's vectors, specialised to static shapes.
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
  /// How many times the program runs this GEMM per call (the trip counts of the loops around it): a
  /// library call or a kernel is chosen by the multiply-adds of all of them, which one kernel serves.
  var calls = 1
  /// What each element of C becomes once its sum is complete, `epilogue(row, column, sum)`: applied to each
  /// micro-kernel's block right after its last K panel stores it (still in L1), so C is written once.
  var epilogue: ((IExpr, IExpr, FExpr) -> FExpr)? = nil
  /// B packed in column panels of `vectors` vectors (`GemmBlocking.packedIndex`), each panel's k rows contiguous:
  /// the micro-kernel reads B sequentially, as weights prepared once can be laid out. `vectors` is then the
  /// blocking's, whatever m (`ldb` unused).
  var packedVectors: Int? = nil
  /// In a bf16 program, B already holds bf16 pairs along K (`Emitter.packRowPairs`), pair rows `ldb` words apart: B
  /// packed once for many GEMMs (a Winograd conv's transformed kernels), not by each.
  var bPairs = false
  /// In a bf16 program, A already holds bf16 pairs along K (`Emitter.packedOnce`), element (i, q) at a + i * aRow +
  /// q * aCol.
  var aPairs = false

  /// Reads A from bf16 pairs packed once for many GEMMs (`Emitter.packedOnce`), `offset` words in, rows `aRow` words
  /// apart when given (its strides as they were otherwise); nothing without pairs (f32).
  mutating func readA(_ pairs: (Base, IExpr)?, offset: IExpr = .c(0), aRow: Int? = nil) {
    guard let (base, at) = pairs else { return }
    (a, aPairs) = ((base, at + offset), true)
    if let aRow { self.aRow = aRow }
  }
  /// A and B hold bf16 pairs along K (`FExpr.bf16Pair`), k counts the pairs, and the micro-kernel accumulates with
  /// `VExpr.dotBF16`: what a bf16 program's GEMMs become once their operands are packed (`bf16Gemm`).
  var pairs = false
  /// A holds s8 quads and B u8 quads along K (`FExpr.bytes`), k counts the quads, and the micro-kernel sums
  /// with `VExpr.dotU8S8` into 32-bit integers: an int8 conv's GEMM (`Emitter.int8Conv`). C holds the sums' bits.
  var quads = false
  /// What each element of C's row starts at instead of zero (bits of an integer in an int8 GEMM), when the GEMM
  /// does not accumulate.
  var startsAt: ((IExpr) -> FExpr)? = nil
  /// What column j of C starts at instead of zero, element j of this buffer (an int8 GEMM along the filters: each
  /// filter's correction), when the GEMM does not accumulate.
  var columnStarts: (Base, IExpr)? = nil
  /// In an int8 GEMM, A holds the u8 quads and B the s8 ones (else B the u8: the dot product's first operand).
  var unsignedA = false
  /// In an int8 GEMM, the s8 steps lie within ±64 (`Quantization.pairsFitInt16`): `VExpr.dotU8S8`'s pairs of
  /// products fit 16 bits.
  var pairsFit16 = false

  /// Makes this an int8 GEMM (`quads`) of weights quantized as `q` (`pairsFit16`); given `columnStarts`, A holds the
  /// u8 quads and each column starts at its correction (a GEMM along the filters).
  mutating func sumQuads(of q: Quantization, columnStarts: (Base, IExpr)? = nil) {
    (quads, pairsFit16) = (true, q.pairsFitInt16)
    if let columnStarts { (unsignedA, self.columnStarts) = (true, columnStarts) }
  }
}

/// The register blocking of a micro-kernel: `rows` x `vectors` accumulators, plus one register per B
/// vector and one for the broadcast of A, within the target's vector registers; K in panels so a column
/// block of B stays in L2 while every row block reuses it.
public struct GemmBlocking: Equatable, Sendable, CustomStringConvertible {
  public var rows: Int, vectors: Int, kPanel: Int

  public var description: String { "\(rows)x\(vectors) vectors, K panel \(kPanel)" }

  /// Loads (B vectors and A broadcasts) and FMAs a core issues per cycle: two of each on every core this
  /// targets (Zen 1-5, Skylake and later, Neoverse N1/V1).
  static let loadPorts = 2.0, fmaPipes = 2.0
  /// Vector registers left free beside accumulators, B vectors and the broadcast. None: a GEMM is a
  /// `region` of its own, so nothing from the code around it is live in its loops, and the full 16
  /// registers of AVX2 take a 4x3 block without a spill (4.6% faster training on Zen 1 than 6x2 with
  /// one register spare).
  static let spareRegisters = 0
  /// The most B vectors a block spans: beyond four, the row count that fits in 16 registers drops below two.
  static let maxVectors = 4
  /// The share of L2 one column block of B's K panel may take (A's rows and C's tile stream beside it).
  static let l2ShareForB = 4
  /// Candidates within this fraction of the fastest are ranked by code size instead.
  static let tieTolerance = 0.03

  /// Cycles per k step for the whole of C under this blocking, by a throughput model: each block's
  /// step takes the longest of its loads over the load ports, its FMAs over the FMA pipes, and one FMA
  /// latency (a block with fewer accumulators than latency x pipes waits on its own results).
  static func cycles(m: Int, n: Int, rows: Int, vectors: Int, lanes: Int, latency: Int) -> Double {
    let width = vectors * lanes
    let restVectors = (n % width + lanes - 1) / lanes
    func block(_ r: Int, _ v: Int) -> Double { max(Double(r + v) / loadPorts, Double(r * v) / fmaPipes, Double(latency)) }
    func column(_ v: Int) -> Double {
      Double(m / rows) * block(rows, v) + (m % rows > 0 ? block(m % rows, v) : 0)
    }
    return Double(n / width) * column(vectors) + (restVectors > 0 ? column(restVectors) : 0)
  }

  /// The blocking for one GEMM on `target`: among the blocks whose accumulators, B vectors and broadcast
  /// fit the register file, those within `tieTolerance` of the fewest modelled cycles; of these the
  /// fewest loads per FMA (the most accumulators for the registers: slack against FMA latency and load
  /// bandwidth the model does not see), then the fewest micro-kernel copies (a remainder row or column
  /// block is one more copy for the JIT to compile). The K panel is the largest that keeps one column
  /// block of B (kPanel x vectors x lanes floats) in a quarter of L2, evened out to divide k where a
  /// divisor is near: a shorter last panel is one more copy too.
  /// `temporaries(vectors)`: the registers the multiply-add itself needs beside them in a block of that many vectors
  /// (`int8Temporaries`; none for an FMA).
  public static func choose(m: Int, n: Int, k: Int, target: Target, vectors: Int? = nil, temporaries: (Int) -> Int = { _ in 0 }) -> GemmBlocking {
    let lanes = target.lanes, registers = target.vectorRegisters
    let latency = target.minimumAccumulators / Int(fmaPipes)
    var candidates: [(rows: Int, vectors: Int, cycles: Double, loadsPerFMA: Double, copies: Int)] = []
    for v in vectors.map({ [$0] }) ?? Array(1...max(1, min(maxVectors, (n + lanes - 1) / lanes))) {
      let mostRows = (registers - 1 - spareRegisters - v - temporaries(v)) / v
      guard mostRows >= 1 else { continue }
      for r in 1...min(mostRows, max(1, m)) {
        let copies = (m % r > 0 ? 2 : 1) * (n % (v * lanes) > 0 && n >= v * lanes ? 2 : 1)
        // Rounded so that equal ratios compare equal.
        let loads = (Double(r + v) / Double(r * v) * 1000).rounded() / 1000
        candidates.append((r, v, cycles(m: m, n: n, rows: r, vectors: v, lanes: lanes, latency: latency), loads, copies))
      }
    }
    let fastest = candidates.map(\.cycles).min()!
    let best = candidates.filter { $0.cycles <= fastest * (1 + tieTolerance) }
      .min { ($0.loadsPerFMA, $0.copies, -$0.vectors) < ($1.loadsPerFMA, $1.copies, -$1.vectors) }!
    let panelBytes = best.vectors * lanes * MemoryLayout<Float>.size
    let longest = max(64, target.l2 / l2ShareForB / panelBytes)
    let least = (k + longest - 1) / longest
    let panels = (least...max(least, least * 2)).first { k % $0 == 0 && k / $0 >= 64 } ?? least
    return GemmBlocking(rows: best.rows, vectors: best.vectors, kPanel: (k + panels - 1) / panels)
  }
}

extension GemmBlocking {
  /// The registers an int8 block of `vectors` B vectors needs for `VExpr.dotU8S8` beside its accumulators, B vectors
  /// and broadcast: none with the target's dot product; with pairs of products summed to 16 bits, the vector of
  /// ones that sums them on and one product; with the bytes widened, a second half of each B vector and two more.
  /// The widened path then reloads its byte mask and a broadcast half from the stack in some loops: leaving room for
  /// those too (vectors + 4) made ResNet-18 built for AVX2 18% slower (fewer accumulators, more loads of B).
  static func int8Temporaries(vectors: Int, pairsFit16: Bool, target: Target) -> Int {
    target.int8Dot ? 0 : pairsFit16 && target.int8Pairs ? 2 : vectors + 2
  }

  /// Where a packed B (`TiledGemm.packedVectors`) holds element (p, column) of a k-row B: its panel of
  /// `vectors` x lanes columns, then row p of the panel.
  static func packedIndex(_ p: IExpr, _ column: IExpr, k: Int, width: Int) -> IExpr {
    IExpr.div(column, width) * (k * width) + p * width + .rem(column, width)
  }
}

extension Emitter {
  mutating func tiledGemm(_ g: TiledGemm) -> [Stmt] {
    if !g.quads, g.packedVectors == nil, g.m * g.n * g.k * g.calls < target.libraryGemmBelow, g.aCol == 1 || g.aRow == 1 {
      let rowMajor = g.aCol == 1
      let call = Stmt.gemm(Gemm(transA: !rowMajor, transB: false, m: g.m, n: g.n, k: g.k, a: g.a, lda: rowMajor ? g.aRow : g.aCol,
                                b: g.b, ldb: g.ldb, beta: g.accumulate ? 1 : 0, c: g.c, ldc: g.ldc))
      guard let epilogue = g.epilogue else { return [call] }
      return [call, loop("r", g.m) { e, r in e.epilogueRun(g, epilogue, row: r, first: .c(0), count: g.n) }]
    }
    if target.precision == .bf16, !g.quads { return bf16Gemm(g) }
    let blk = GemmBlocking.choose(m: g.m, n: g.n, k: g.k, target: target, vectors: g.packedVectors) {
      g.quads ? GemmBlocking.int8Temporaries(vectors: $0, pairsFit16: g.pairsFit16, target: target) : 0
    }
    gemms.append(GemmChoice(node: node, m: g.m, n: g.n, k: g.k, aRow: g.aRow, aCol: g.aCol, ldb: g.ldb, ldc: g.ldc,
                            rows: blk.rows, vectors: blk.vectors, kPanel: blk.kPanel, calls: g.calls))
    // The micro-kernels get the register file to themselves (see `Stmt.region`).
    let blocks = blockedGemm(g, blk)
    return [.region(fresh("gemm"), blocks)]
  }

  /// The micro-kernels of a GEMM over its K panels, with the blocking chosen for it.
  mutating func blockedGemm(_ g: TiledGemm, _ blk: GemmBlocking) -> [Stmt] {
    let panels = (g.k + blk.kPanel - 1) / blk.kPanel
    let kc = (g.k + panels - 1) / panels
    var out: [Stmt] = []
    // With several panels every panel accumulates, so C starts at zero (or `startsAt`) unless the GEMM accumulates.
    if panels > 1, !g.accumulate {
      out.append(loop("r", g.m) { e, r in
        [e.elementwise(g.n) { i in .store(g.c.0, g.c.1 + r * g.ldc + i, g.columnStarts.map { .load($0.0, $0.1 + i) } ?? g.startsAt?(r) ?? .c(0)) }]
      })
    }
    let load = g.accumulate || panels > 1
    // The full panels in a loop (one copy of the code), then the shorter last panel. An epilogue belongs to
    // the final panel, which is then a copy of its own.
    let full = g.k / kc, last = g.k % kc
    var early = g
    early.epilogue = nil
    let looped = g.epilogue != nil && last == 0 ? full - 1 : full
    if looped == 1 {
      out += columnBlocks(early, blk, k0: .c(0), kc: kc, load: load)
    } else if looped > 1 {
      out.append(loop("kp", looped) { e, kp in e.columnBlocks(early, blk, k0: kp * kc, kc: kc, load: load) })
    }
    if looped < full { out += columnBlocks(g, blk, k0: .c(looped * kc), kc: kc, load: load) }
    if last > 0 { out += columnBlocks(g, blk, k0: .c(full * kc), kc: last, load: load) }
    return out
  }

  /// Every column block of one K panel: full blocks in a loop, the remaining columns with fewer (and masked) vectors.
  mutating func columnBlocks(_ g: TiledGemm, _ blk: GemmBlocking, k0: IExpr, kc: Int, load: Bool) -> [Stmt] {
    let lanes = self.lanes
    let width = blk.vectors * lanes
    var out: [Stmt] = []
    if g.n / width > 0 {
      out.append(loop("nb", g.n / width) { e, nb in
        e.rowBlocks(g, blk, n0: nb * width, widths: Array(repeating: lanes, count: blk.vectors), k0: k0, kc: kc, load: load)
      })
    }
    let rest = g.n % width
    if rest > 0 {
      var widths = Array(repeating: lanes, count: rest / lanes)
      if rest % lanes > 0 { widths.append(rest % lanes) }
      out += rowBlocks(g, blk, n0: .c(g.n - rest), widths: widths, k0: k0, kc: kc, load: load)
    }
    return out
  }

  /// Every row block of one column block: full blocks in a loop, the remaining rows as a smaller kernel.
  mutating func rowBlocks(_ g: TiledGemm, _ blk: GemmBlocking, n0: IExpr, widths: [Int], k0: IExpr, kc: Int, load: Bool) -> [Stmt] {
    var out: [Stmt] = []
    if g.m / blk.rows > 0 {
      out.append(loop("mb", g.m / blk.rows) { e, mb in
        e.microKernel(g, m0: mb * blk.rows, rows: blk.rows, n0: n0, widths: widths, k0: k0, kc: kc, load: load)
      })
    }
    if g.m % blk.rows > 0 {
      out += microKernel(g, m0: .c(g.m - g.m % blk.rows), rows: g.m % blk.rows, n0: n0, widths: widths, k0: k0, kc: kc, load: load)
    }
    return out
  }

  /// C[m0 ..< m0+rows][n0 ...] over k0 ..< k0+kc, in registers: per k, one load per B vector, one
  /// broadcast per row and rows x vectors fused multiply-adds.
  mutating func microKernel(_ g: TiledGemm, m0: IExpr, rows: Int, n0: IExpr, widths: [Int], k0: IExpr, kc: Int, load: Bool) -> [Stmt] {
    let id = fresh("t"), lanes = self.lanes
    func acc(_ r: Int, _ v: Int) -> String { "\(id)_c\(r)_\(v)" }
    func cAt(_ r: Int, _ v: Int) -> IExpr { g.c.1 + (m0 + r) * g.ldc + n0 + v * lanes }
    var out: [Stmt] = []
    for r in 0..<rows {
      for (v, l) in widths.enumerated() {
        let start = g.columnStarts.map { VExpr.load($0.0, $0.1 + n0 + v * lanes, lanes: l) } ?? g.startsAt.map { .broadcast($0(m0 + r)) } ?? .zero
        out.append(.vlocal(acc(r, v), load ? .load(g.c.0, cAt(r, v), lanes: l) : start))
      }
    }
    out.append(loop("k", kc) { _, kk in
      let p = kk + k0
      var body: [Stmt] = []
      for (v, l) in widths.enumerated() {
        // A packed panel starts at n0 * k (n0 is a multiple of the panel's width).
        let at = g.packedVectors.map { g.b.1 + n0 * g.k + p * ($0 * lanes) + v * lanes } ?? g.b.1 + p * g.ldb + n0 + v * lanes
        body.append(.vlocal("\(id)_b\(v)", .load(g.b.0, at, lanes: l)))
      }
      for r in 0..<rows {
        body.append(.vlocal("\(id)_a\(r)", .broadcast(.load(g.a.0, g.a.1 + (m0 + r) * g.aRow + p * g.aCol))))
        for v in widths.indices {
          let (x, y, sum) = (VExpr.local("\(id)_a\(r)"), VExpr.local("\(id)_b\(v)"), VExpr.local(acc(r, v)))
          // The dot product's first operand is the unsigned one: B's u8 steps.
          let dot: VExpr = g.unsignedA ? .dotU8S8(sum, x, y, pairsFit16: g.pairsFit16) : .dotU8S8(sum, y, x, pairsFit16: g.pairsFit16)
          body.append(.vset(acc(r, v), g.quads ? dot : g.pairs ? .dotBF16(sum, x, y) : .fma(x, y, sum)))
        }
      }
      return body
    })
    for r in 0..<rows {
      for (v, l) in widths.enumerated() { out.append(.vstore(g.c.0, cAt(r, v), .local(acc(r, v)), lanes: l)) }
    }
    if let epilogue = g.epilogue {
      for r in 0..<rows { out += epilogueRun(g, epilogue, row: m0 + r, first: n0, count: widths.reduce(0, +)) }
    }
    return out
  }

  /// C's elements (row, first ..< first + count) through the GEMM's epilogue, in place, as a scalar loop the back
  /// ends vectorise.
  mutating func epilogueRun(_ g: TiledGemm, _ epilogue: (IExpr, IExpr, FExpr) -> FExpr, row: IExpr, first: IExpr, count: Int) -> [Stmt] {
    [loop("i", count) { e, i in
      let at = g.c.1 + row * g.ldc + first + i
      return e.sharedStore(g.c.0, at, epilogue(row, first + i, .load(g.c.0, at)))
    }]
  }

  /// Stores vector `acc` to the `lanes` floats at arena[scratch + part * lanes] (each part of a parallel
  /// statement its own) and adds its lanes in order, one local per add (short statements for both
  /// renderers): the statements and the sum.
  mutating func sumLanes(_ acc: String, scratch: Int, part: IExpr = .c(0)) -> ([Stmt], FExpr) {
    let at = IExpr.c(scratch) + part * lanes
    var out: [Stmt] = [.vstore(.arena, at, .local(acc), lanes: lanes)]
    var sum = FExpr.load(.arena, at)
    for l in 1..<lanes {
      let partial = fresh("sum")
      out.append(.local(partial, sum + .load(.arena, at + l)))
      sum = .local(partial)
    }
    return (out, sum)
  }
}
