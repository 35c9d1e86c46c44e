import GraphIR
import Passes

/// Convolution as im2col + one register-blocked GEMM per group of images, with the bias, relu and
/// max-pool epilogue fused into the pass that moves the GEMM result back to NCHW; its gradients as two
/// GEMMs per group (weights, columns) plus col2im.
///
/// Images are processed in groups of G (the largest divisor of the batch up to the target's
/// `convImageGroup`), so a GEMM's N dimension is G*OH*OW: thousands of columns, enough for the
/// micro-kernels, while the column buffer stays within the core's caches (3.6 MB for SimpleCNN's conv2
/// at 16 images). Measured against groups of 32 and 64, 16 trained faster and used 45 MB less memory.
extension Emitter {
  /// The conv's geometry.
  struct ConvShape {
    var n: Int, c: Int, h: Int, w: Int, f: Int, k: Int, oh: Int, ow: Int, group: Int
    /// Whether rows of the column matrices are padded to `row` (the im2col path); unpadded, `row == cols`.
    var padded = false
    var plane: Int { oh * ow }
    var ckk: Int { c * k * k }
    /// Columns of one group's GEMM.
    var cols: Int { group * plane }
    /// Floats from one row of a column matrix (im2col's, the conv result's, their gradients') to the next.
    var row: Int { padded ? Self.paddedRow(cols) : cols }

    /// A row length of whole cache lines, an odd number of them. Rows a multiple of many lines long (SimpleCNN's
    /// conv1: 12,544 floats, 784 lines, a multiple of 1 KiB) start in a few L1 sets only, so the GEMM's rows
    /// of B and C evict each other; with an odd line count consecutive rows start in distinct sets.
    /// `cnnc bench --kernels` on Zen 4, conv1 (32 x 12,544 x 9) with AVX2 kernels: 0.72-0.74 of the FMA
    /// peak with 12,544-float rows, 0.81 with 12,560.
    static func paddedRow(_ cols: Int) -> Int {
      let line = 64 / MemoryLayout<Float>.size
      let lines = (cols + line - 1) / line
      return (lines % 2 == 0 ? lines + 1 : lines) * line
    }
  }

  /// The conv's geometry, with images grouped by the largest divisor of the batch up to the target's group.
  static func convShape(_ a: Conv2DAttrs, x xd: [Int], target: Target, training: Bool) -> ConvShape {
    let oh = (xd[2] + 2 * a.padding - a.kernel) / a.stride + 1, ow = (xd[3] + 2 * a.padding - a.kernel) / a.stride + 1
    let most = target.convImageGroup(columnBytesPerImage: xd[1] * a.kernel * a.kernel * oh * ow * MemoryLayout<Float>.size, training: training)
    let group = (1...max(1, min(xd[0], most))).last { xd[0] % $0 == 0 }!
    return ConvShape(n: xd[0], c: xd[1], h: xd[2], w: xd[3], f: a.filters, k: a.kernel, oh: oh, ow: ow, group: group, padded: true)
  }

  func convShape(_ a: Conv2DAttrs, x xd: [Int]) -> ConvShape { Self.convShape(a, x: xd, target: target, training: training) }

  /// Output positions `o` in 0..<outputs whose input position `o * step + shift` lies in [0, size): the range
  /// is static once the kernel offset is, so the copy loops carry no bounds checks.
  static func validRange(step: Int, shift: Int, size: Int, outputs: Int) -> Range<Int> {
    let lo = max(0, (-shift + step - 1) / step)
    let hiValue = size - 1 - shift
    let hi = hiValue < 0 ? 0 : min(outputs, hiValue / step + 1)
    return lo..<max(lo, hi)
  }

  /// Visits every (ky, kx, oy, ox) whose input pixel exists: rows are checked once each, and kx is
  /// unrolled so each row's valid column range is a constant and the inner loop has no bounds checks.
  /// `body(ci, ky, kx, column, iy, ix)` gives the statements for one element (column oy * OW + ox);
  /// `outside(ci, ky, kx, column)`, when given, those for a position in the padding.
  /// `rows` limits the visit to output rows first ..< first + count, the column then counted from the first.
  mutating func patchLoops(_ a: Conv2DAttrs, _ s: ConvShape, _ ci: IExpr, rows: (first: IExpr, count: Int)? = nil,
                           outside: ((IExpr, IExpr, Int, IExpr) -> [Stmt])? = nil,
                           _ body: (IExpr, IExpr, Int, IExpr, IExpr, IExpr) -> [Stmt]) -> [Stmt] {
    [loop("ky", s.k) { e, ky in
      (0..<s.k).compactMap { kx in
        let shift = kx - a.padding
        let xs = Self.validRange(step: a.stride, shift: shift, size: s.w, outputs: s.ow)
        guard !xs.isEmpty || outside != nil else { return nil }
        return e.loop("oy", rows?.count ?? s.oh) { e, oyv in
          // oyv counts the visited rows (the column's row); oy is the output row.
          let oy = oyv + (rows?.first ?? .c(0))
          let iy = oy * a.stride + ky + (-a.padding)
          var row: [Stmt] = []
          if !xs.isEmpty {
            row.append(e.loop("ox", xs.count) { _, vx in
              let ox = vx + xs.lowerBound
              return body(ci, ky, kx, oyv * s.ow + ox, iy, ox * a.stride + shift)
            })
          }
          guard a.padding > 0 else { return row }
          let inside = Cond.and(.ilt(.c(-1), iy), .ilt(iy, .c(s.h)))
          guard let outside else { return [.when(inside, row)] }
          // Positions in the padding: the columns left and right of the valid range, and whole rows above and below.
          if xs.lowerBound > 0 { row.append(e.loop("ox", xs.lowerBound) { _, ox in outside(ci, ky, kx, oyv * s.ow + ox) }) }
          let right = max(xs.upperBound, xs.lowerBound)
          if right < s.ow { row.append(e.loop("ox", s.ow - right) { _, vx in outside(ci, ky, kx, oyv * s.ow + (vx + right)) }) }
          let blank = e.loop("ox", s.ow) { _, ox in outside(ci, ky, kx, oyv * s.ow + ox) }
          return [.when(inside, row), .when(.ilt(iy, .c(0)), [blank]), .when(.ilt(.c(s.h - 1), iy), [blank])]
        }
      }
    }]
  }

  /// A group's input split into phases, so that every copy into the column matrix is a unit-stride run.
  ///
  /// Column (wy, wx, py, px) of kernel offset (ky, kx) reads padded input row (py * step + a), a = wy * stride
  /// + ky, with step = window * stride (and alike for columns). Phase plane (a % step, b % step) holds the
  /// padded input's rows and columns of that remainder, so the read is row py + a / step, column px + b / step
  /// of one plane: consecutive columns of the matrix read consecutive floats. The planes' padding is zeroed
  /// once per call (the group copies write only the interior, the same positions every group), so the
  /// column copies test no bounds either.
  struct PhasePlanes {
    let step: Int
    /// Rows and columns of one plane.
    let rows: Int, cols: Int
    let c: Int, group: Int
    /// Outputs per window position (rows, columns).
    let py: Int, px: Int
    /// The largest in-window offset a, over window positions and kernel offsets.
    let reach: Int

    init(_ a: Conv2DAttrs, _ s: ConvShape, window: Int) {
      (step, c, group) = (window * a.stride, s.c, s.group)
      (py, px) = (s.oh / window, s.ow / window)
      reach = (window - 1) * a.stride + s.k - 1
      (rows, cols) = (py + reach / step, px + reach / step)
    }

    var plane: Int { rows * cols }
    var floats: Int { group * c * step * step * plane }
    /// Plane (ry, rx) of image j, channel ci: its row qy, column qx.
    func at(_ j: IExpr, _ ci: IExpr, _ ry: IExpr, _ rx: IExpr, _ qy: IExpr, _ qx: IExpr) -> IExpr {
      (((j * c + ci) * step + ry) * step + rx) * plane + qy * cols + qx
    }
  }

  /// Floats of an im2col conv kernel's phase planes (`PhasePlanes`), after its other scratch: none without
  /// a pooling window (see `im2col`).
  static func phaseFloats(_ a: Conv2DAttrs, x: [Int], window: Int, target: Target, training: Bool) -> Int {
    window > 1 ? PhasePlanes(a, convShape(a, x: x, target: target, training: training), window: window).floats : 0
  }

  /// Zeroes the phase planes at `phases` (once per call: the padding they hold is never written), if any.
  mutating func clearPhases(_ a: Conv2DAttrs, _ s: ConvShape, phases: Int, window: Int) -> [Stmt] {
    window > 1 ? [zeroArena(phases, PhasePlanes(a, s, window: window).floats)] : []
  }

  /// Copies the images of group `g` into the column matrix [C*k*k, G*OH*OW], with zeros where the kernel
  /// overlaps the padding.
  ///
  /// Columns are in window-major order for a `window` x `window` partition of the output plane: column
  /// ((wy * window + wx) * PY + py) * PX + px holds output (py * window + wy, px * window + wx), so each
  /// window position is a contiguous block and a pooling epilogue reads whole vectors. Window 1 is
  /// plain row-major order.
  ///
  /// Without a window the columns are copied straight from the input: one loop nest per kernel offset
  /// (`patchLoops`), whose rows the loop vectoriser turns into vector copies (strided loads for a strided
  /// conv). With one, that was window x window times as many nests (36 for SimpleCNN's conv1), whose
  /// vectorisation was the largest part of the conv's compile time. So a windowed conv's images go first
  /// into phase planes at `phases` (`PhasePlanes`; their padding cleared by `clearPhases`): at most
  /// step x step strided loops for the loop vectoriser, or explicit vector copies of rows when the step is
  /// 1. Then every row of columns is one unit-stride vector run, in one loop nest left as written
  /// (`scalarLoops`). A training step's JIT on x86-64-v3 took 0.83x the time (four paired `cnnc bench`
  /// runs, Zen 5). Without a window the planes would be a second pass over the input for nothing: ResNet-8's
  /// unwindowed convs trained 5% slower through them.
  mutating func im2col(_ a: Conv2DAttrs, _ s: ConvShape, x: Placement, g: IExpr, col: Int, window: Int = 1, phases: Int = 0,
                       channels: (first: IExpr, count: Int)? = nil) -> [Stmt] {
    guard window > 1 else { return im2colRows(a, s, x: x, g: g, col: .c(col), channels: channels) }
    let q = PhasePlanes(a, s, window: window)
    var split: [Stmt] = []
    // Only the phases some column reads: offsets a run over 0...reach, so with a reach below the step (a
    // strided 1x1 conv reads one phase of four) the others are never filled.
    for ry in 0..<min(q.step, q.reach + 1) {
      for rx in 0..<min(q.step, q.reach + 1) {
        let ys = Self.validRange(step: q.step, shift: ry - a.padding, size: s.h, outputs: q.rows)
        let xs = Self.validRange(step: q.step, shift: rx - a.padding, size: s.w, outputs: q.cols)
        guard !ys.isEmpty, !xs.isEmpty else { continue }
        split.append(loop("j", s.group) { e, j in [e.loop("c", s.c) { e, ci in [e.loop("qy", ys.count) { e, vy in
          let qy = vy + ys.lowerBound, iy = qy * q.step + (ry - a.padding)
          let source = { (qx: IExpr) in .c(x.offset) + (g * s.group + j) * (s.c * s.h * s.w) + ci * (s.h * s.w) + iy * s.w + qx * q.step + (rx - a.padding) }
          guard q.step == 1 else {
            // Strided loads: the loop vectoriser's interleaved loads (a few shuffles per vector) beat
            // scalar copies, and these are at most step x step small loop nests.
            return [e.loop("qx", xs.count) { _, vx in
              let qx = vx + xs.lowerBound
              return [.store(.arena, .c(phases) + q.at(j, ci, .c(ry), .c(rx), qy, qx), .load(x.base, source(qx)))]
            }]
          }
          return e.vectorRuns(xs.count, from: .c(xs.lowerBound)) { _, qx, lanes in
            [.vstore(.arena, .c(phases) + q.at(j, ci, .c(ry), .c(rx), qy, qx), .load(x.base, source(qx), lanes: lanes), lanes: lanes)]
          }
        }] }] })
      }
    }
    let columns = loop("j", s.group) { e, j in [e.loop("c", s.c) { e, ci in [e.loop("ky", s.k) { e, ky in [e.loop("kx", s.k) { e, kx in
      [e.loop("wy", window) { e, wy in [e.loop("wx", window) { e, wx in [e.loop("py", q.py) { e, yy in
        let (ay, ax) = (wy * a.stride + ky, wx * a.stride + kx)
        return e.vectorRuns(q.px) { _, xx, lanes in
          let to = IExpr.c(col) + ((ci * s.k + ky) * s.k + kx) * s.row + j * s.plane + (wy * window + wx) * (q.py * q.px) + yy * q.px + xx
          let from = IExpr.c(phases) + q.at(j, ci, .rem(ay, q.step), .rem(ax, q.step), yy + .div(ay, q.step), xx + .div(ax, q.step))
          return [.vstore(.arena, to, .load(.arena, from, lanes: lanes), lanes: lanes)]
        }
      }] }] }]
    }] }] }] }
    return split + [.scalarLoops([columns])]
  }

  /// im2col without a pooling window: the columns straight from the input, one loop nest per kernel offset
  /// (`patchLoops`). `rows` (first, count) limits it to those output rows of one image per GEMM, in a column
  /// matrix of count x OW columns (a band, `convForwardBanded`). Positions in the padding get `padding` (an int8
  /// conv's zero point: its columns are steps).
  mutating func im2colRows(_ a: Conv2DAttrs, _ s: ConvShape, x: Placement, g: IExpr, col: IExpr, channels: (first: IExpr, count: Int)? = nil,
                           rows: (first: IExpr, count: Int)? = nil, padding: FExpr = .c(0)) -> [Stmt] {
    let channels = channels ?? (.c(0), s.c), length = rows.map { $0.count * s.ow } ?? s.row
    return [loop("j", s.group) { e, j in
      [e.loop("c", channels.count) { e, cv in
        let ci = cv + channels.first
        func at(_ ci: IExpr, _ ky: IExpr, _ kx: Int, _ column: IExpr) -> IExpr {
          col + ((ci * s.k + ky) * s.k + .c(kx)) * length + j * s.plane + column
        }
        return e.patchLoops(a, s, ci, rows: rows, outside: { ci, ky, kx, column in [.store(.arena, at(ci, ky, kx, column), padding)] }) {
          ci, ky, kx, column, iy, ix in
          [.store(.arena, at(ci, ky, kx, column),
                  .load(x.base, .c(x.offset) + (g * s.group + j) * (s.c * s.h * s.w) + ci * (s.h * s.w) + iy * s.w + ix))]
        }
      }]
    }]
  }

  /// Copies group `g` of an NCHW gradient into GEMM layout: [F x G*OH*OW], or with `filtersLast`
  /// [G*OH*OW x F] (the inner loop runs along the layout's rows either way); only `filters` when given.
  mutating func toGEMMLayout(_ dy: Placement, _ s: ConvShape, g: IExpr, dst: Int, filtersLast: Bool = false,
                            filters: (first: IExpr, count: Int)? = nil) -> Stmt {
    let (f0, count) = filters ?? (.c(0), s.f)
    func copy(_ j: IExpr, _ fv: IExpr, _ i: IExpr) -> [Stmt] {
      let fi = fv + f0
      let at: IExpr = filtersLast ? .c(dst) + (j * s.plane + i) * s.f + fi : .c(dst) + fi * s.row + j * s.plane + i
      return [.store(.arena, at, .load(dy.base, .c(dy.offset) + (g * s.group + j) * (s.f * s.plane) + fi * s.plane + i))]
    }
    return loop("j", s.group) { e, j in
      filtersLast ? [e.loop("i", s.plane) { e, i in [e.loop("f", count) { _, fi in copy(j, fi, i) }] }]
                  : [e.loop("f", count) { e, fi in [e.loop("i", s.plane) { _, i in copy(j, fi, i) }] }]
    }
  }

  /// The window of a pooling epilogue that partitions the conv plane (size == stride, dividing it), else 1.
  static func poolWindow(_ p: PoolAttrs?, _ s: ConvShape) -> Int {
    guard let p, p.size == p.stride, p.size > 1, s.oh % p.size == 0, s.ow % p.size == 0 else { return 1 }
    return p.size
  }

  /// What a conv forward's epilogue reads: the conv result in GEMM layout (`tmp`), the bias, the folded
  /// batch norm's scale and shift, the output.
  struct ConvEpilogue {
    let n: Node, s: ConvShape, tmp: Int, table: Int, window: Int, pooled: Int
    let y: Placement, bias: Placement?, fold: Placement?
    /// The conv value plus its filter's bias, then scaled and shifted by a folded batch norm.
    func biased(_ v: FExpr, _ fi: IExpr) -> FExpr {
      let b = bias.map { v + .load(.params, .c($0.offset) + fi) } ?? v
      return fold.map { b * .load($0.base, .c($0.offset) + fi) + .load($0.base, .c($0.offset + s.f) + fi) } ?? b
    }
    /// The value stored at output index `o` of filter `fi`: biased, relu'd when fused, then the conv's tail.
    func finished(_ v: FExpr, _ fi: IExpr, relu: Bool, tail: ConvTail, at o: IExpr) -> FExpr {
      let b = biased(v, fi)
      return tail.apply(relu ? .select(.fgt(b, .c(0)), b, .c(0)) : b, at: o)
    }
  }

  /// What a conv's store applies after its bias, folded batch norm and relu (`conv2d_act`): a residual of the
  /// output's shape added, then an activation. Applied as the value is stored, from the activation's one definition.
  struct ConvTail {
    var residual: Placement?
    var activation: (any Activation)?
    static let none = ConvTail(residual: nil, activation: nil)
    var isEmpty: Bool { residual == nil && activation == nil }
    /// `v`, the conv's value at output index `i`, with the residual and activation applied.
    func apply(_ v: FExpr, at i: IExpr) -> FExpr {
      let sum = residual.map { v + .load($0.base, .c($0.offset) + i) } ?? v
      return activation.map { $0.value(sum) } ?? sum
    }
  }

  /// The tail of a `conv2d_act` node: its residual operand (the last) and activation.
  func convTail(_ n: Node, _ op: Conv2DActOp) -> ConvTail {
    ConvTail(residual: op.residual ? at(n.args.last!) : nil, activation: op.activation?.definition as? any Activation)
  }

  /// The [2, C] scale and shift of the batch norm folded into node `n`, when it is scaled.
  func foldOperand(_ n: Node, scaled: Bool) -> Placement? { scaled ? at(n.args[1]) : nil }

  /// Records the algorithm `ConvCost` picks for a pass of node `n`; true when it is Winograd.
  mutating func choosesWinograd(_ n: Node, _ choice: ConvPick) -> Bool {
    convs.append(ConvChoice(node: n.name, algorithm: choice.algorithm, tile: choice.tile.m, reason: choice.reason))
    return choice.isWinograd
  }

  /// Whether a forward conv's GEMM writes the output itself, its epilogue applied in the micro-kernel: one image per
  /// GEMM (batch 1, or a group of one), so its columns are the output plane, and no pool to reorder them.
  static func storesDirectly(_ s: ConvShape, window: Int, pool: PoolAttrs?) -> Bool { s.group == 1 && window == 1 && pool == nil }

  /// Whether a forward conv's GEMM reads its input as the column matrix itself: a 1x1 conv of stride 1 without
  /// padding, one image per GEMM (batch 1, or a group of one), unpooled. Its im2col would be a copy of the
  /// image: [C, H*W] is already [C*k*k, OH*OW]. (ResNet-50 at batch 1 has 36 such convs, about half its work.)
  static func readsInputInPlace(_ a: Conv2DAttrs, _ s: ConvShape, window: Int) -> Bool {
    a.kernel == 1 && a.stride == 1 && a.padding == 0 && s.group == 1 && window == 1
  }

  mutating func convForward(_ n: Node, _ a: Conv2DAttrs, relu: Bool, pool: PoolAttrs?, tail: ConvTail = .none) {
    let pick = ConvCost.forward(a, x: dims(n.args[0]), target: target, largeTiles: !training && pool == nil)
    if choosesWinograd(n, pick) { return winogradForward(n, a, tile: pick.tile, relu: relu, pool: pool, tail: tail) }
    let x = at(n.args[0]), s = convShape(a, x: dims(n.args[0])), w = at("\(n.name).weight"), scratch = plan.scratch[n.name]!
    let window = Self.poolWindow(pool, s), inPlace = Self.readsInputInPlace(a, s, window: window)
    if let band = Self.rowBand(s, window: window, pool: pool, inPlace: inPlace, target: target) {
      return convForwardBanded(n, a, band: band, relu: relu, tail: tail)
    }
    let col = scratch.offset, tmp = scratch.offset + (inPlace ? 0 : s.ckk * s.row), table = tmp + s.f * s.row, phases = table + s.cols
    let pooled = (s.oh / window) * (s.ow / window)
    let epilogue = ConvEpilogue(n: n, s: s, tmp: tmp, table: table, window: window, pooled: pooled, y: at(n.name),
                                bias: a.bias ? at("\(n.name).bias") : nil, fold: foldOperand(n, scaled: a.scaled))
    if window > 1 {
      // Each pooled output's top-left position in the conv plane, as the argmax is saved.
      let px = s.ow / window
      body.append(elementwise(pooled) { q in .store(.arena, .c(table) + q, .ofInt(IExpr.div(q, px) * (window * s.ow) + IExpr.rem(q, px) * window)) })
    }
    body += clearPhases(a, s, phases: phases, window: window)
    let weightPairs = sharedPairs((.params, .c(w.offset)), rows: s.f, k: s.ckk, rowStride: s.ckk)
    // At inference the GEMM and its epilogue split by output channels (the pooling epilogues stay whole); the
    // column copy by input channels, when a window does not order it.
    let parts = pool == nil ? parallelParts(units: s.f, macs: s.n * s.f * s.plane * s.ckk) : 1
    let copyParts = window == 1 && !inPlace ? parallelParts(units: s.c, macs: s.n * s.f * s.plane * s.ckk) : 1
    body.append(loop("g", s.n / s.group) { e, g in
      var out = inPlace ? [] : e.inParts(copyParts, of: "input channels") { e, part in
        e.im2col(a, s, x: x, g: g, col: col, window: window, phases: phases, channels: (part * (s.c / copyParts), s.c / copyParts))
      }
      // tmp[F x cols] = W[F x ckk] * col[ckk x cols], vectorised along the columns.
      let b: (Base, IExpr) = inPlace ? (x.base, .c(x.offset) + g * (s.c * s.plane)) : (.arena, .c(col))
      let rows = s.f / parts
      out += e.inParts(parts, of: "output channels") { e, part in
        let f0 = part * rows
        var gemm = TiledGemm(m: rows, n: s.cols, k: s.ckk, a: (.params, .c(w.offset) + f0 * s.ckk), aRow: s.ckk, aCol: 1,
                             b: b, ldb: inPlace ? s.plane : s.row, c: (.arena, .c(tmp) + f0 * s.row), ldc: s.row,
                             accumulate: false, calls: parts)
        gemm.readA(weightPairs, offset: f0 * ((s.ckk + 1) / 2), aRow: (s.ckk + 1) / 2)
        if Self.storesDirectly(s, window: window, pool: pool) {
          // One image per GEMM: C is the image's output planes, each element finished in the micro-kernel.
          gemm.c = (epilogue.y.base, .c(epilogue.y.offset) + (g * s.f + f0) * s.plane)
          gemm.ldc = s.plane
          gemm.epilogue = { row, column, v in
            let fi = row + f0
            return epilogue.finished(v, fi, relu: relu, tail: tail, at: (g * s.f + fi) * s.plane + column)
          }
          return e.tiledGemm(gemm)
        }
        var out = e.tiledGemm(gemm)
        if window > 1 {
          out.append(e.windowMajorPool(epilogue, g: g))
        } else if let p = pool {
          out.append(e.poolPlane(epilogue, p, g: g))
        } else {
          out.append(e.storePlane(epilogue, relu: relu, g: g, filters: (f0, rows), tail: tail))
        }
        return out
      }
      return out
    })
  }

  /// Output rows per band of a conv whose whole column matrix would not stay in L2 (ResNet's 7x7 stem: 147 x
  /// 12,544 floats, 7.4 MB, written by im2col and read back by the GEMM from L3), or nil: the largest divisor of
  /// the output height whose band's columns take at most `Self.bandShareOfL2` of L2 (and whose count of bands the
  /// target's parts divide, where one does). One image per GEMM, no pooling window; a plane of a single row too
  /// wide for the budget is left whole.
  static func rowBand(_ s: ConvShape, window: Int, pool: PoolAttrs?, inPlace: Bool, target: Target) -> Int? {
    let rowFloats = s.ckk * s.ow, budget = target.l2 / bandShareOfL2 / MemoryLayout<Float>.size
    guard s.group == 1, window == 1, pool == nil, !inPlace, s.ckk * s.plane > budget, s.oh > 1 else { return nil }
    // MobileNetV2's stem in 7 bands of 16 rows ran on one core at batch 1, in 14 of 8 on both.
    guard let band = evenBands(s.oh, images: 1, target: target, fits: { $0 * rowFloats <= budget }), band < s.oh,
          band * s.ow >= bandVectors * target.lanes else { return nil }
    return band
  }

  /// The most rows per band, dividing `rows`, that `fits`, preferring a band count over `images` images that the
  /// target's parts divide (every core gets as many bands); nil when no height fits.
  static func evenBands(_ rows: Int, images: Int, target: Target, fits: (Int) -> Bool) -> Int? {
    let heights = (1...rows).filter { rows % $0 == 0 && fits($0) }
    return heights.last { images * (rows / $0) % target.parallelParts == 0 } ?? heights.last
  }

  /// The share of L2 one band's column matrix may take: the band's weights and output rows stream beside it.
  static let bandShareOfL2 = 4
  /// The fewest vectors of columns a band may have: its GEMM runs along them, and ResNet's 7x7 layers in bands of
  /// one row (7 columns) took 2.4 times as long as whole.
  static let bandVectors = 8

  /// A conv computed in bands of output rows (`rowBand`): per band, the columns of those rows, then the GEMM
  /// over them writing the output rows with their epilogue, while the columns are in L2. At inference the bands
  /// split over the pool, each part with columns of its own (the rows of the plane's column matrix hold them).
  mutating func convForwardBanded(_ n: Node, _ a: Conv2DAttrs, band: Int, relu: Bool, tail: ConvTail) {
    let x = at(n.args[0]), s = convShape(a, x: dims(n.args[0])), w = at("\(n.name).weight")
    let epilogue = ConvEpilogue(n: n, s: s, tmp: 0, table: 0, window: 1, pooled: 0, y: at(n.name),
                                bias: a.bias ? at("\(n.name).bias") : nil, fold: foldOperand(n, scaled: a.scaled))
    let bands = s.oh / band, width = band * s.ow, scratch = plan.scratch[n.name]!.offset
    let parts = parallelParts(units: bands, macs: s.n * s.f * s.plane * s.ckk), per = bands / parts
    let weightPairs = sharedPairs((.params, .c(w.offset)), rows: s.f, k: s.ckk, rowStride: s.ckk)
    let split = inParts(parts, of: "row bands") { e, part in [e.loop("b", s.n) { e, b in [e.loop("band", per) { e, bv in
      let first = (bv + part * per) * band, col = IExpr.c(scratch) + part * (s.ckk * width)
      var out = e.im2colRows(a, s, x: x, g: b, col: col, rows: (first, band))
      let start = b * (s.f * s.plane) + first * s.ow
      var gemm = TiledGemm(m: s.f, n: width, k: s.ckk, a: (.params, .c(w.offset)), aRow: s.ckk, aCol: 1, b: (.arena, col), ldb: width,
                           c: (epilogue.y.base, .c(epilogue.y.offset) + start), ldc: s.plane, accumulate: false, calls: s.n * bands)
      gemm.readA(weightPairs, aRow: (s.ckk + 1) / 2)
      gemm.epilogue = { row, column, v in epilogue.finished(v, row, relu: relu, tail: tail, at: start + row * s.plane + column) }
      out += e.tiledGemm(gemm)
      return out
    }] }] }
    body += split
  }

  /// A 1x1 conv whose result is channels-last ([N, H, W, F]): C[pixels x F] = A[pixels x C] * W^T[C x F], the GEMM's
  /// vectors along the filters and its rows the pixels, so the result is stored as the micro-kernels finish it,
  /// bias, folded batch norm and tail applied. A is the input itself: channels-last, one GEMM over the batch's
  /// pixels; NCHW, one per image, read down its planes. W^T is packed once per set of weights.
  mutating func convForwardChannelsLast(_ n: Node, _ a: Conv2DAttrs, relu: Bool, tail: ConvTail) {
    let x = at(n.args[0]), s = convShape(a, x: dims(n.args[0])), w = at("\(n.name).weight"), inputLast = channelsLast.contains(n.args[0])
    let epilogue = ConvEpilogue(n: n, s: s, tmp: 0, table: 0, window: 1, pooled: 0, y: at(n.name),
                                bias: a.bias ? at("\(n.name).bias") : nil, fold: foldOperand(n, scaled: a.scaled))
    // Blocks of pixels with one A each: the batch (channels-last input) or an image (NCHW input).
    let (blocks, m) = inputLast ? (1, s.n * s.plane) : (s.n, s.plane)
    let macs = s.n * s.f * s.plane * s.ckk
    // Rows (pixels) split evenly for a pool, the remainder to the last part (a 7x7 plane's 49 rows: 24, 25).
    let parts = parallelParts(macs: macs), rows = m / parts, more = m % parts
    // W^T packed once in column panels of the micro-kernel's width, each panel's rows contiguous: read in place,
    // a 1,024-filter W^T has rows 4 KiB apart, whose column blocks fell in the same L1 sets, and the micro-kernel
    // streamed them from L2 for every block of pixels (ShuffleNetV2's last 1x1 conv ran at half speed).
    let vectors = GemmBlocking.choose(m: max(rows, more), n: s.f, k: s.ckk, target: target).vectors, width = vectors * lanes
    // Weights that leave half of L2 split by filters instead, in whole panels, so each core streams its share of
    // them once: split by pixels, both read all of them (ResNet-50's 2,048-filter 7x7 convs, 4 MB, ran at 1.85x
    // the other engine's time).
    let filterParts = filterSplitParts(filters: s.f, width: width, macs: macs)
    let byFilters = s.ckk * s.f * MemoryLayout<Float>.size > target.l2 / 2 && filterParts > 1
    let wt = preparedWeightsT(w, s, taps: 1, width: width) { c, _ in c }
    body.append(loop("g", blocks) { e, g in
      // The GEMM of `count` pixels from r0, for the filters (first, count) or all.
      func gemm(_ e: inout Emitter, first r0: IExpr, count: Int, filters: (first: IExpr, count: Int)? = nil) -> [Stmt] {
        let (aBase, aRow, aCol): (IExpr, Int, Int) = inputLast ? (.c(x.offset) + r0 * s.c, s.c, 1) : (.c(x.offset) + g * (s.c * s.plane) + r0, 1, s.plane)
        let first = g * m + r0, (f0, fs) = filters ?? (.c(0), s.f)
        var gemm = TiledGemm(m: count, n: fs, k: s.ckk, a: (x.base, aBase), aRow: aRow, aCol: aCol,
                             b: (.prepared, .c(wt) + f0 * s.ckk), ldb: width, c: (epilogue.y.base, .c(epilogue.y.offset) + f0 + first * s.f), ldc: s.f,
                             accumulate: false, calls: blocks * parts)
        gemm.packedVectors = vectors
        gemm.epilogue = { row, column, v in epilogue.finished(v, column + f0, relu: relu, tail: tail, at: (first + row) * s.f + column + f0) }
        return e.tiledGemm(gemm)
      }
      if byFilters {
        return e.inParts(filterParts, of: "filters") { e, part in
          e.filterRanges(s.f, width: width, parts: filterParts, part: part) { e, range in gemm(&e, first: .c(0), count: m, filters: range) }
        }
      }
      return e.inParts(parts, of: "pixels") { e, part in
        e.evenShare(m, parts: parts, part: part) { e, first, count in gemm(&e, first: first, count: count) }
      }
    })
  }

  /// Window-major columns: window position w of every pooled output is one contiguous block, so the max over
  /// the window (first maximum wins, as in the reference) is vector code; relu and the argmax follow.
  mutating func windowMajorPool(_ c: ConvEpilogue, g: IExpr) -> Stmt {
    let (s, pooled, window) = (c.s, c.pooled, c.window)
    let argmax = at("\(c.n.name).argmax")
    return loop("j", s.group) { e, j in [e.loop("f", s.f) { e, fi in [e.loop("q", pooled) { e, q in
      var inner: [Stmt] = []
      var best = "", at = ""
      for wpos in 0..<(window * window) {
        let v = e.fresh("v")
        inner.append(.local(v, c.biased(.load(.arena, .c(c.tmp) + fi * s.row + j * s.plane + .c(wpos * pooled) + q), fi)))
        let offset = FExpr.c(Float((wpos / window) * s.ow + wpos % window))
        if wpos == 0 {
          (best, at) = (v, e.fresh("at"))
          inner.append(.local(at, offset))
        } else {
          let (b2, a2) = (e.fresh("best"), e.fresh("at"))
          let better = Cond.fgt(.local(v), .local(best))
          inner.append(.local(a2, .select(better, offset, .local(at))))
          inner.append(.local(b2, .select(better, .local(v), .local(best))))
          (best, at) = (b2, a2)
        }
      }
      let o = IExpr.c(0) + (g * s.group + j) * (s.f * pooled) + fi * pooled + q
      inner.append(.store(c.y.base, .c(c.y.offset) + o, .select(.fgt(.local(best), .c(0)), .local(best), .c(0))))
      inner.append(.store(argmax.base, .c(argmax.offset) + o, .load(.arena, .c(c.table) + q) + .local(at)))
      return inner
    }] }] }
  }

  /// Pools the biased conv plane in place order; relu(max) == max(relu) and the relu mask is "pooled > 0".
  mutating func poolPlane(_ c: ConvEpilogue, _ p: PoolAttrs, g: IExpr) -> Stmt {
    let s = c.s
    let py = (s.oh - p.size) / p.stride + 1, px = (s.ow - p.size) / p.stride + 1
    let argmax = at("\(c.n.name).argmax")
    return loop("j", s.group) { e, j in [e.loop("f", s.f) { e, fi in [e.loop("py", py) { e, yy in [e.loop("px", px) { e, xx in
      let best = e.fresh("best"), bi = e.fresh("bi")
      let first = yy * (p.stride * s.ow) + xx * p.stride
      func conv(_ p: IExpr) -> IExpr { .c(c.tmp) + fi * s.row + j * s.plane + p }
      var inner: [Stmt] = [.local(best, c.biased(.load(.arena, conv(first)), fi)), .local(bi, .ofInt(first))]
      inner += e.small("ky", p.size) { e, ky in e.small("kx", p.size) { _, kx in
        let idx = first + ky * s.ow + kx
        let v = c.biased(.load(.arena, conv(idx)), fi)
        return [.set(bi, .select(.fgt(v, .local(best)), .ofInt(idx), .local(bi))),
                .set(best, .select(.fgt(v, .local(best)), v, .local(best)))]
      } }
      let o = (g * s.group + j) * (s.f * py * px) + fi * (py * px) + yy * px + xx
      inner.append(.store(c.y.base, .c(c.y.offset) + o, .select(.fgt(.local(best), .c(0)), .local(best), .c(0))))
      inner.append(.store(argmax.base, .c(argmax.offset) + o, .local(bi)))
      return inner
    }] }] }] }
  }

  /// The biased conv plane (relu'd when fused) to the output in NCHW order.
  mutating func storePlane(_ c: ConvEpilogue, relu: Bool, g: IExpr, filters: (first: IExpr, count: Int), tail: ConvTail = .none) -> Stmt {
    let s = c.s
    return loop("j", s.group) { e, j in [e.loop("f", filters.count) { e, fv in [e.loop("i", s.plane) { e, i in
      let fi = fv + filters.first
      let o = (g * s.group + j) * (s.f * s.plane) + fi * s.plane + i
      let value = c.finished(.load(.arena, .c(c.tmp) + fi * s.row + j * s.plane + i), fi, relu: relu, tail: tail, at: o)
      // Without a tail the plain store of before (the relu's repeated operand left to the back ends).
      return tail.isEmpty ? [.store(c.y.base, .c(c.y.offset) + o, value)] : e.sharedStore(c.y.base, .c(c.y.offset) + o, value)
    }] }] }
  }

  /// dW^T[ckk x F] = col[ckk x cols] * dy^T[cols x F], accumulated over groups in scratch, then
  /// transposed into dW: the GEMM's vectors run along the filters, and the columns are the forward's layout.
  /// A step that splits its kernels copies the columns by input channels, and copies dy, multiplies and
  /// transposes by filters (each part reads only its filters of dy^T).
  mutating func convGradWeight(_ n: Node, _ a: Conv2DAttrs) {
    if choosesWinograd(n, ConvCost.forward(a, x: dims(n.args[1]), target: target)) { return winogradGradWeight(n, a) }
    let dy = at(n.args[0]), x = at(n.args[1]), s = convShape(a, x: dims(n.args[1]))
    let dw = at(n.name)
    let scratch = plan.scratch[n.name]!
    let col = scratch.offset, dyN = col + s.ckk * s.row, dwT = dyN + s.f * s.cols
    let macs = s.n * s.f * s.plane * s.ckk
    let copyParts = parallelParts(units: s.c, macs: macs)
    let parts = s.f % lanes == 0 ? parallelParts(units: s.f / lanes, macs: macs) : 1, per = s.f / parts
    body.append(elementwise(s.ckk * s.f) { i in .store(.arena, .c(dwT) + i, .c(0)) })
    body.append(loop("g", s.n / s.group) { e, g in
      e.inParts(copyParts, of: "input channels") { e, part in
        e.im2col(a, s, x: x, g: g, col: col, channels: (part * (s.c / copyParts), s.c / copyParts))
      } + e.inParts(parts, of: "filters") { e, part in
        let f0 = part * per
        return [e.toGEMMLayout(dy, s, g: g, dst: dyN, filtersLast: true, filters: (f0, per))]
          + e.tiledGemm(TiledGemm(m: s.ckk, n: per, k: s.cols, a: (.arena, .c(col)), aRow: s.row, aCol: 1,
                                  b: (.arena, .c(dyN) + f0), ldb: s.f, c: (.arena, .c(dwT) + f0), ldc: s.f, accumulate: true, calls: parts))
      }
    })
    body += inParts(parts, of: "filters") { e, part in
      [e.loop("f", per) { e, fv in [e.loop("r", s.ckk) { _, r in
        let fi = fv + part * per
        return [.store(dw.base, .c(dw.offset) + fi * s.ckk + r, .load(.arena, .c(dwT) + r * s.f + fi))]
      }] }]
    }
  }

  /// dcol[ckk x cols] = W^T[ckk x F] * dy[F x cols], then col2im into dx. One image per GEMM reads dy where it
  /// is; several are copied into GEMM layout first. A step that splits its kernels splits by input channels:
  /// each part's rows of dcol and its channels of dx.
  mutating func convGradInput(_ n: Node, _ a: Conv2DAttrs) {
    if choosesWinograd(n, ConvCost.inputGradient(a, x: dims(n.args[2]), target: target)) { return winogradGradInput(n, a) }
    let dy = at(n.args[0]), w = at(n.args[1]), s = convShape(a, x: dims(n.args[2]))
    let dx = at(n.name)
    let scratch = plan.scratch[n.name]!
    let dcol = scratch.offset, dyT = scratch.offset + s.ckk * s.row
    let parts = parallelParts(units: s.c, macs: s.n * s.f * s.plane * s.ckk), per = s.c / parts, taps = s.k * s.k
    if a.stride != 1 { body.append(zero(dx)) }
    // A bf16 step packs W^T in pairs along the filters once, for every image's GEMM.
    let weightPairs = packedOnce((s.f + 1) / 2 * s.ckk) { e, at, out in
      e.packRowPairs(k: s.f, count: s.ckk, from: w.base, into: at, in: out) { p, i in .c(w.offset) + p * s.ckk + i }
    }
    body.append(loop("g", s.n / s.group) { e, g in
      let b: (Base, IExpr) = s.group == 1 ? (dy.base, .c(dy.offset) + g * (s.f * s.plane)) : (.arena, .c(dyT))
      return (s.group == 1 ? [] : [e.toGEMMLayout(dy, s, g: g, dst: dyT)]) + e.inParts(parts, of: "input channels") { e, part in
        let c0 = part * per
        var gemm = TiledGemm(m: per * taps, n: s.cols, k: s.f, a: (w.base, .c(w.offset) + c0 * taps), aRow: 1, aCol: s.ckk,
                             b: b, ldb: s.group == 1 ? s.plane : s.row, c: (.arena, .c(dcol) + c0 * (taps * s.row)), ldc: s.row,
                             accumulate: false, calls: parts)
        gemm.readA(weightPairs, offset: c0 * taps)
        return e.tiledGemm(gemm) + [
          e.loop("j", s.group) { e, j in [e.loop("c", per) { e, cv in
            let ci = cv + c0
            return a.stride == 1 ? e.col2imGather(a, s, dx, dcol: dcol, g: g, j: j, ci: ci) :
              e.patchLoops(a, s, ci) { ci, ky, kx, column, iy, ix in
                [.accumulate(dx.base, .c(dx.offset) + (g * s.group + j) * (s.c * s.h * s.w) + ci * (s.h * s.w) + iy * s.w + ix,
                             .load(.arena, .c(dcol) + ((ci * s.k + ky) * s.k + .c(kx)) * s.row + j * s.plane + column))]
              }
          }] }]
      }
    })
  }

  /// col2im for stride 1 as a gather: each input pixel's gradient is the sum of the column entries that read
  /// it, stored once (no zeroing, no read-modify-write). The plane splits into row and column ranges over
  /// which the set of contributing kernel offsets is constant, so each range is a loop with a static sum
  /// and unit-stride loads. Terms are added in (ky, kx) order, the order of the scatter form.
  mutating func col2imGather(_ a: Conv2DAttrs, _ s: ConvShape, _ dx: Placement, dcol: Int, g: IExpr, j: IExpr, ci: IExpr) -> [Stmt] {
    /// Maximal runs of positions whose valid kernel offsets (o = i + padding - k in 0..<outputs) are equal.
    func runs(_ size: Int, _ outputs: Int) -> [(start: Int, count: Int, offsets: [Int])] {
      var out: [(start: Int, count: Int, offsets: [Int])] = []
      for i in 0..<size {
        let offsets = (0..<s.k).filter { i + a.padding - $0 >= 0 && i + a.padding - $0 < outputs }
        if let last = out.last, last.offsets == offsets { out[out.count - 1].count += 1 } else { out.append((i, 1, offsets)) }
      }
      return out
    }
    var out: [Stmt] = []
    for r in runs(s.h, s.oh) {
      for c in runs(s.w, s.ow) {
        out.append(loop("iy", r.count) { e, vy in
          let iy = vy + r.start
          return [e.loop("ix", c.count) { e, vx in
            // A chain of locals rather than one long expression: short statements for both renderers.
            var inner: [Stmt] = [], sum: FExpr?
            for ky in r.offsets {
              for kx in c.offsets {
                let t = FExpr.load(.arena, .c(dcol) + (ci * (s.k * s.k) + .c(ky * s.k + kx)) * s.row + j * s.plane
                  + (iy + (a.padding - ky)) * s.ow + .c(c.start + a.padding - kx) + vx)
                let partial = e.fresh("sum")
                inner.append(.local(partial, sum.map { $0 + t } ?? t))
                sum = .local(partial)
              }
            }
            return inner + [.store(dx.base, .c(dx.offset) + (g * s.group + j) * (s.c * s.h * s.w) + ci * (s.h * s.w) + iy * s.w + .c(c.start) + vx, sum ?? .c(0))]
          }]
        })
      }
    }
    return out
  }

  /// db[f] = sum over images and pixels of dy: a one-vector accumulator per filter over every image's plane
  /// (a masked load for the plane's tail), then its lanes summed in order. The same order every run.
  mutating func convGradBias(_ n: Node) {
    let dy = at(n.args[0]), d = dims(n.args[0])
    let db = at(n.name)
    let lanes = self.lanes, plane = d[2] * d[3], full = plane / lanes, tail = plane % lanes
    let scratch = plan.scratch[n.name]!.offset
    body.append(loop("f", d[1]) { e, fi in
      let acc = e.fresh("acc")
      // fma(1, x, acc) rounds once, exactly like acc + x.
      func add(_ at: IExpr, _ count: Int) -> Stmt { .vset(acc, .fma(.broadcast(.c(1)), .load(dy.base, at, lanes: count), .local(acc))) }
      var out: [Stmt] = [.vlocal(acc, .zero)]
      out.append(e.loop("img", d[0]) { e, img in
        let base = IExpr.c(dy.offset) + img * (d[1] * plane) + fi * plane
        var inner: [Stmt] = []
        if full > 0 { inner.append(e.loop("i", full) { _, i in [add(base + i * lanes, lanes)] }) }
        if tail > 0 { inner.append(add(base + full * lanes, tail)) }
        return inner
      })
      let (summing, sum) = e.sumLanes(acc, scratch: scratch)
      out += summing + [.store(db.base, .c(db.offset) + fi, sum)]
      return out
    })
  }
}

// MARK: The conv ops' lowerings

/// Scratch of a conv kernel: a group's column matrix and the conv result or gradient in GEMM layout.
private func convScratch(_ a: Conv2DAttrs, x: String, _ shapes: ShapeTable, _ target: Target, training: Bool) -> (ckk: Int, cols: Int, row: Int, f: Int) {
  let s = Emitter.convShape(a, x: shapes[x]!.dims, target: target, training: training)
  return (s.ckk, s.cols, s.row, s.f)
}

/// The layout rule of a forward conv whose fused residual, if any, is operand `residual`: a depthwise conv keeps
/// its value's layout; a conv of one group reads either and may write channels-last (a 1x1 conv reads the input
/// as its GEMM's A, Winograd copies it channels-last anyway, the rest build pixel-major columns,
/// `convColumnsChannelsLast`), and gains by it.
private func convLayoutRule(_ attrs: Conv2DAttrs, _ n: Node, _ shapes: ShapeTable, _ target: Target, residual: Int?) -> LayoutRule {
  let x = shapes[n.args[0]]!.dims, a = attrs.clamped(input: x)
  guard x.count == 4, a.dilation == 1 else { return .planar }
  // An int8 conv reads and writes NCHW (`Emitter.int8Conv`), but a 1x1 one of stride 1 without padding may write
  // channels-last from either (`Emitter.int8ConvChannelsLast`).
  if a.quantization != nil {
    return a.kernel == 1 && a.stride == 1 && a.padding == 0 ? .gemm(inputEither: true, residual: residual, gains: true) : .planar
  }
  let shared = residual.map { [$0] } ?? []
  if a.groups == x[1], a.filters == x[1] { return .shared([0] + shared, gains: true) }
  guard a.groups == 1 else { return .planar }
  // Columns of k x k taps shorter than a few dozen floats leave the micro-kernel's K loop too short to pay for
  // gathering them (a strided 1x1 conv's columns are whole pixels, as a 1x1 conv's input is).
  if a.kernel > 1, x[1] * a.kernel * a.kernel < Emitter.leastColumnDepth { return .planar }
  return .gemm(inputEither: true, residual: residual, gains: true)
}

extension Emitter {
  /// A forward conv in the layout chosen for its value: channels-last (a depthwise conv or a GEMM along the
  /// filters), else the NCHW kernels.
  mutating func forwardConv(_ n: Node, _ a: Conv2DAttrs, relu: Bool, tail: ConvTail = .none) {
    if let q = a.quantization {
      return channelsLast.contains(n.name) ? int8ConvChannelsLast(n, a, q, relu: relu, tail: tail) : int8Conv(n, a, q, relu: relu, tail: tail)
    }
    if a.isDirect, sharesChannelsLast(n) { return depthwiseChannelsLast(n, a, relu: relu, tail: tail) }
    if channelsLast.contains(n.name) {
      if a.kernel == 1, a.stride == 1, a.padding == 0 { return convForwardChannelsLast(n, a, relu: relu, tail: tail) }
      let pick = ConvCost.forward(a, x: dims(n.args[0]), target: target, largeTiles: true)
      if choosesWinograd(n, pick) { return winogradForward(n, a, tile: pick.tile, relu: relu, pool: nil, tail: tail) }
      convColumnsChannelsLast(n, a, relu: relu, tail: tail)
    } else if a.isDirect {
      directConv(n, a, relu: relu, tail: tail)
    } else {
      convForward(n, a, relu: relu, pool: nil, tail: tail)
    }
  }
}

extension Conv2DOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.forwardConv(n, attrs.clamped(input: e.dims(n.args[0])), relu: false) }
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule { convLayoutRule(attrs, n, shapes, target, residual: nil) }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { scratchFloats(n, shapes, target, training: training, pool: nil) }

  /// A forward conv's scratch, with the pool its epilogue fuses (which orders the columns).
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool, pool: PoolAttrs?) -> Int {
    let x = shapes[n.args[0]]!.dims, a = attrs.clamped(input: x)
    // An int8 conv's columns and quads are scratch of its kernel's own (`Emitter.int8Conv`).
    if a.quantization != nil { return 0 }
    // Planes for each part an inference program splits the groups into (see `directConv`).
    if a.isDirect { return Emitter.directConvShape(a, x: x).floats * target.parallelParts }
    let pick = ConvCost.forward(a, x: x, target: target, largeTiles: !training && pool == nil)
    if pick.isWinograd {
      let s = WinogradShape.forward(a, x: x, tile: pick.tile, target: target)
      return s.forwardFloats + s.planeFloats
    }
    let g = convScratch(attrs, x: n.args[0], shapes, target, training: training), s = Emitter.convShape(a, x: x, target: target, training: training)
    // An inference conv may be lowered channels-last through columns (the layouts are chosen after the plan).
    let columnsLast = training || pool != nil ? 0 : Emitter.columnFloats(s, target: target)
    let window = Emitter.poolWindow(pool.map { let o = a.output(x); return $0.clamped(o.h, o.w) }, s)
    // The column matrix (none when the GEMM reads the input), the conv result, the pooling epilogue's table of
    // window positions, and the phase planes.
    let columns = Emitter.readsInputInPlace(a, s, window: window) ? 0 : g.ckk * g.row
    let result = Emitter.storesDirectly(s, window: window, pool: pool) ? 0 : g.f * g.row
    return max(columnsLast, columns + result + g.cols + Emitter.phaseFloats(a, x: x, window: window, target: target, training: training))
  }
}

extension Conv2DActOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    e.forwardConv(n, attrs.clamped(input: e.dims(n.args[0])), relu: false, tail: e.convTail(n, self))
  }
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule {
    convLayoutRule(attrs, n, shapes, target, residual: residual ? n.args.count - 1 : nil)
  }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { Conv2DOp(attrs).scratchFloats(n, shapes, target, training: training) }
}

extension Conv2DReLUOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.forwardConv(n, attrs.clamped(input: e.dims(n.args[0])), relu: true) }
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule { convLayoutRule(attrs, n, shapes, target, residual: nil) }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { Conv2DOp(attrs).scratchFloats(n, shapes, target, training: training) }
}

extension Conv2DReLUMaxPoolOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let c = attrs.clamped(input: e.dims(n.args[0]))
    let o = c.output(e.dims(n.args[0]))
    e.convForward(n, c, relu: true, pool: pool.clamped(o.h, o.w))
  }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { Conv2DOp(attrs).scratchFloats(n, shapes, target, training: training, pool: pool) }
}

extension Conv2DGradInputOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let a = attrs.clamped(input: e.dims(n.args[2]))
    if a.isDirect { e.directConvGradInput(n, a) } else { e.convGradInput(n, a) }
  }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int {
    let x = shapes[n.args[2]]!.dims, a = attrs.clamped(input: x)
    if a.isDirect { return Emitter.directConvShape(a, x: x).floats }
    if ConvCost.inputGradient(a, x: x, target: target).isWinograd { return WinogradShape.inputGradient(a, x: x, target: target).forwardFloats }
    // dcol, and dy in GEMM layout when a GEMM takes several images (one image's GEMM reads dy in place).
    let s = Emitter.convShape(a, x: x, target: target, training: training)
    return (s.ckk + (s.group == 1 ? 0 : s.f)) * s.row
  }
}

extension Conv2DGradWeightOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let a = attrs.clamped(input: e.dims(n.args[1]))
    if a.isDirect { e.directConvGradWeight(n, a) } else { e.convGradWeight(n, a) }
  }
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int {
    let x = shapes[n.args[1]]!.dims, a = attrs.clamped(input: x)
    if a.isDirect { return Emitter.directConvShape(a, x: x).floats + target.lanes }
    if ConvCost.forward(a, x: x, target: target).isWinograd { return WeightGradientLayout.make(a, x: x, target: target).floats }
    let g = convScratch(attrs, x: n.args[1], shapes, target, training: training)
    return g.ckk * g.row + g.f * g.cols + g.ckk * g.f
  }
}

extension Conv2DGradBiasOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.convGradBias(n) }
  /// The accumulator's lanes, summed in order.
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { target.lanes }
}
