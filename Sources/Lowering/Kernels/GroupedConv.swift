import GraphIR
import Passes

/// Grouped, depthwise and dilated convolutions (`conv2d` with `groups:` or `dilation:`) as direct loops.
///
/// Per image and group, the group's input channels are copied into zero-padded planes whose columns are split
/// by phase (column j of phase r holds padded position j * stride + r), so the taps of a run of outputs along
/// a row are contiguous vector loads whatever the stride or dilation; each run is one vector accumulator, one
/// fused multiply-add per tap. A depthwise conv (one input channel per group) has k x k multiply-adds per
/// output: as a GEMM its reduction would be k x k long, far too short for the register-blocked micro-kernels
/// the im2col path feeds, and one GEMM per channel would be a loop of tiny GEMMs.
extension Emitter {
  /// The geometry of a direct conv and its padded, phase-split planes.
  struct DirectConvShape {
    var n: Int, c: Int, h: Int, w: Int, f: Int, k: Int, oh: Int, ow: Int
    var stride: Int, padding: Int, dilation: Int, groups: Int
    /// Input channels per group.
    var cg: Int { c / groups }
    /// Filters per group.
    var fg: Int { f / groups }
    /// Columns of one phase of a padded row.
    var columns: Int { (w + 2 * padding + stride - 1) / stride }
    /// Floats of one padded row (every phase).
    var row: Int { stride * columns }
    /// Floats of one padded, phase-split plane.
    var plane: Int { (h + 2 * padding) * row }
    /// Floats of one group's planes.
    var floats: Int { cg * plane }

    /// The position of padded row `row`, phase `phase`, column `column` of plane `ci` (from the planes' start).
    func index(_ ci: IExpr, row y: IExpr, phase: Int, column: IExpr) -> IExpr { ci * plane + y * row + .c(phase * columns) + column }

    /// Tap kx of output column ox reads padded column ox * stride + kx * dilation: this phase, this column shift.
    func tap(_ kx: Int) -> (phase: Int, shift: Int) { ((kx * dilation) % stride, (kx * dilation) / stride) }

    /// The weight of filter o, input channel ci of its group, tap (ky, kx).
    func weight(_ o: IExpr, _ ci: IExpr, _ ky: IExpr, _ kx: Int) -> IExpr { ((o * cg + ci) * k + ky) * k + .c(kx) }

    /// Element (image b, channel ch, row iy, column ix) of an NCHW input of this shape.
    func input(_ b: IExpr, _ ch: IExpr, _ iy: IExpr, _ ix: IExpr) -> IExpr { ((b * c + ch) * h + iy) * w + ix }
  }

  static func directConvShape(_ a: Conv2DAttrs, x d: [Int]) -> DirectConvShape {
    let o = a.output(d)
    return DirectConvShape(n: d[0], c: d[1], h: d[2], w: d[3], f: a.filters, k: a.kernel, oh: o.h, ow: o.w,
                           stride: a.stride, padding: a.padding, dilation: a.dilation, groups: a.groups)
  }

  /// Each input element of group `g` of image `b` to its padded plane position (`toPlanes`), or back
  /// (`!toPlanes`, from planes at `planes` into the NCHW buffer `x`). The column ranges are static, so the
  /// loops have no bounds checks.
  private mutating func planeCopy(_ s: DirectConvShape, b: IExpr, g: IExpr, x: Placement, planes: IExpr, toPlanes: Bool) -> Stmt {
    loop("ci", s.cg) { e, ci in [e.loop("iy", s.h) { e, iy in
      (0..<s.stride).compactMap { r -> Stmt? in
        let valid = Self.validRange(step: s.stride, shift: r - s.padding, size: s.w, outputs: s.columns)
        guard !valid.isEmpty else { return nil }
        return e.loop("j", valid.count) { _, v in
          let j = v + valid.lowerBound
          let plane = planes + s.index(ci, row: iy + s.padding, phase: r, column: j)
          let image = IExpr.c(x.offset) + s.input(b, g * s.cg + ci, iy, j * s.stride + (r - s.padding))
          return [toPlanes ? .store(.arena, plane, .load(x.base, image)) : .store(x.base, image, .load(.arena, plane))]
        }
      }
    }] }
  }

  /// `body(ci, ky, kx, phase-split index of the tap for output row oy, column first)` over a filter's taps.
  private mutating func taps(_ s: DirectConvShape, planes: IExpr, oy: IExpr, first: IExpr,
                             _ body: (IExpr, IExpr, Int, IExpr) -> Stmt) -> [Stmt] {
    small("ci", s.cg) { e, ci in e.small("ky", s.k) { _, ky in
      (0..<s.k).map { kx in
        let t = s.tap(kx)
        return body(ci, ky, kx, planes + s.index(ci, row: oy * s.stride + ky * s.dilation, phase: t.phase, column: first + t.shift))
      }
    } }
  }

  /// The forward conv, with its bias, folded batch norm and (fused) relu applied to each vector of outputs.
  mutating func directConv(_ n: Node, _ a: Conv2DAttrs, relu: Bool, tail: ConvTail = .none) {
    let s = Self.directConvShape(a, x: dims(n.args[0]))
    let x = at(n.args[0]), y = at(n.name), w = at("\(n.name).weight"), planes = plan.scratch[n.name]!.offset
    let bias = a.bias ? at("\(n.name).bias") : nil, fold = foldOperand(n, scaled: a.scaled)
    // At inference the groups split into parts, each with planes of its own.
    let parts = parallelParts(units: s.groups, macs: s.n * s.f * s.oh * s.ow * s.cg * s.k * s.k), perPart = s.groups / parts
    // The padding stays zero: only the planes' interior is written below.
    body.append(zeroArena(planes, s.floats * parts))
    body.append(loop("b", s.n) { e, b in e.inParts(parts, of: "groups") { e, part in [e.loop("g", perPart) { e, gv in
      let g = gv + part * perPart, planes = IExpr.c(planes) + part * s.floats
      return [e.planeCopy(s, b: b, g: g, x: x, planes: planes, toPlanes: true), e.loop("f", s.fg) { e, fi in [e.loop("oy", s.oh) { e, oy in
        let o = g * s.fg + fi
        return e.vectorRuns(s.ow) { e, first, lanes in
          let acc = e.fresh("acc")
          var out: [Stmt] = [.vlocal(acc, bias.map { .broadcast(.load(.params, .c($0.offset) + o)) } ?? .zero)]
          out += e.taps(s, planes: planes, oy: oy, first: first) { ci, ky, kx, tap in
            .vset(acc, .fma(.broadcast(.load(w.base, .c(w.offset) + s.weight(o, ci, ky, kx))), .load(.arena, tap, lanes: lanes), .local(acc)))
          }
          if let fold {
            let scale = VExpr.broadcast(.load(fold.base, .c(fold.offset) + o)), shift = VExpr.broadcast(.load(fold.base, .c(fold.offset + s.f) + o))
            out.append(.vset(acc, .add(.mul(.local(acc), scale), shift)))
          }
          if relu { out.append(.vset(acc, .max(.zero, .local(acc)))) }
          out.append(.vstore(y.base, .c(y.offset) + ((b * s.f + o) * s.oh + oy) * s.ow + first, .local(acc), lanes: lanes))
          return out
        } + e.applyTail(tail, to: y, row: ((b * s.f + o) * s.oh + oy) * s.ow, count: s.ow)
      }] }]
    }] } })
  }

  /// A depthwise conv on channels-last values: vectors along the channels, so a 7x7 plane uses every lane. For
  /// each output pixel the channel vectors are innermost, so the input is read as it lies in memory (a pixel's
  /// channels are consecutive cache lines) and the hardware prefetchers stream it; the weights (prepared once,
  /// tap-major: k x k vectors per channel vector) are reloaded from L1 per pixel. Sweeping a plane per channel
  /// vector with its weights in registers fetched each input line on its own: MobileNetV2's 112x112 layer
  /// ran at half the speed. Rows and columns are taken in runs whose taps inside the input are the same, so
  /// the taps over the padding are left out at compile time and no plane is padded or copied. The tail
  /// follows each output row while it is in L1.
  mutating func depthwiseChannelsLast(_ n: Node, _ a: Conv2DAttrs, relu: Bool, tail: ConvTail) {
    let s = Self.directConvShape(a, x: dims(n.args[0]))
    let x = at(n.args[0]), y = at(n.name), taps = s.k * s.k, wt = prepareTapMajor(n, s)
    let bias = a.bias ? at("\(n.name).bias") : nil, fold = foldOperand(n, scaled: a.scaled)
    let rows = Self.tapRuns(outputs: s.oh, size: s.h, s), columns = Self.tapRuns(outputs: s.ow, size: s.w, s)
    let pixels = { (e: inout Emitter, b: IExpr, oy: IExpr, ox: IExpr, count: Int, kys: [Int], kxs: [Int], c0: IExpr, lanes: Int) -> [Stmt] in
      e.depthwisePixels(s, x: x, y: y, weights: wt, bias: bias, fold: fold, relu: relu, image: b, row: oy, column: ox, count: count,
                        taps: (kys, kxs), channels: (c0, lanes))
    }
    let width = lanes, vectors = s.c / width, rest = s.c % width, macs = s.n * s.c * s.oh * s.ow * taps
    /// Output row oy (taps `kys` inside the input) of image b: every channel vector, the masked rest, then the tail.
    let outputRow = { (e: inout Emitter, b: IExpr, oy: IExpr, kys: [Int]) -> [Stmt] in
      let row = (b * s.oh + oy) * s.ow
      // Each run of columns in blocks of `depthwisePixels` pixels, then its last ones one by one.
      let out: [Stmt] = columns.flatMap { col -> [Stmt] in
        func channels(_ e: inout Emitter, _ ox: IExpr, _ n: Int) -> [Stmt] {
          var channels = vectors > 0 ? [e.loop("cv", vectors) { e, cv in pixels(&e, b, oy, ox, n, kys, col.taps, cv * width, width) }] : []
          if rest > 0 { channels += pixels(&e, b, oy, ox, n, kys, col.taps, .c(vectors * width), rest) }
          return channels
        }
        let run = Self.depthwisePixels, blocks = col.range.count / run, single = col.range.count % run
        var loops: [Stmt] = []
        if blocks > 0 { loops.append(e.loop("ox", blocks) { e, u in channels(&e, u * run + col.range.lowerBound, run) }) }
        if single > 0 { loops.append(e.loop("ox", single) { e, u in channels(&e, u + (blocks * run + col.range.lowerBound), 1) }) }
        return loops
      }
      guard !tail.isEmpty else { return out }
      return out + [e.loop("ox", s.ow) { e, ox in e.applyTail(tail, to: y, row: (row + ox) * s.c, count: s.c) }]
    }
    // Parts take whole images where they divide the batch, else each image's rows (each row run split evenly, its
    // remainder to the last part): the pixels the 1x1 convs around it give each core, so each reads what its own
    // core wrote. Split by channel vectors, each core read half of every input pixel from the other: with the two
    // vCPUs far apart on the host, the depthwise conv of a MobileNetV2 block at batch 1 took 2.2 times its time
    // split by rows.
    let parts = parallelParts(macs: macs), byImages = parts > 1 && s.n % parts == 0, per = s.n / parts
    body += inParts(parts, of: byImages ? "images" : "rows") { e, part in
      guard !byImages else {
        return [e.loop("b", per) { e, bv in rows.map { r in
          e.loop("oy", r.range.count) { e, v in outputRow(&e, part * per + bv, v + r.range.lowerBound, r.taps) }
        } }]
      }
      return [e.loop("b", s.n) { e, b in e.rowsInParts(rows.map(\.range), parts: parts, part: part) { e, oy, run in outputRow(&e, b, oy, rows[run].taps) } }]
    }
  }

  /// Output pixels (row, column ..< column + count) of `image` of a channels-last depthwise conv, channels
  /// (first, lanes), from the taps inside the input (the same for every pixel of a run): each tap's weight vector is
  /// loaded once for the pixels, which read overlapping input columns (the back ends load each once), so a run of 4
  /// pixels of a 3x3 conv loads 27 vectors for 36 multiply-adds where single pixels load 72.
  mutating func depthwisePixels(_ s: DirectConvShape, x: Placement, y: Placement, weights wt: Int, bias: Placement?, fold: Placement?, relu: Bool,
                                image b: IExpr, row oy: IExpr, column ox: IExpr, count: Int, taps: (ys: [Int], xs: [Int]),
                                channels: (first: IExpr, lanes: Int)) -> [Stmt] {
    let (c0, lanes) = channels
    let accs = (0..<count).map { _ in fresh("acc") }
    let start: VExpr = bias.map { .load(.params, .c($0.offset) + c0, lanes: lanes) } ?? .zero
    var run: [Stmt] = accs.map { .vlocal($0, start) }
    for ky in taps.ys { for kx in taps.xs {
      let weight = fresh("w")
      run.append(.vlocal(weight, .load(.prepared, .c(wt) + (ky * s.k + kx) * s.c + c0, lanes: lanes)))
      for (p, acc) in accs.enumerated() {
        let input = (b * s.h + oy * s.stride + (ky * s.dilation - s.padding)) * s.w + (ox + p) * s.stride + (kx * s.dilation - s.padding)
        run.append(.vset(acc, .fma(.load(x.base, .c(x.offset) + input * s.c + c0, lanes: lanes), .local(weight), .local(acc))))
      }
    } }
    for (p, acc) in accs.enumerated() {
      if let fold {
        let scale = VExpr.load(fold.base, .c(fold.offset) + c0, lanes: lanes), shift = VExpr.load(fold.base, .c(fold.offset + s.f) + c0, lanes: lanes)
        run.append(.vset(acc, .add(.mul(.local(acc), scale), shift)))
      }
      if relu { run.append(.vset(acc, .max(.zero, .local(acc)))) }
      run.append(.vstore(y.base, .c(y.offset) + ((b * s.oh + oy) * s.ow + ox + p) * s.c + c0, .local(acc), lanes: lanes))
    }
    return run
  }

  /// Output pixels along a row a channels-last depthwise conv computes together (`depthwiseChannelsLast`): 4
  /// accumulators, a weight and an input vector fit AVX2's 16 registers; 8 (AVX-512's 32) was slower on Zen 4.
  static let depthwisePixels = 4

  /// Prepared-buffer room the prepare program fills with a depthwise conv's weights tap-major ([k*k][C]: per tap, a vector
  /// per channel vector), once per set of weights.
  mutating func prepareTapMajor(_ n: Node, _ s: DirectConvShape) -> Int {
    let w = at("\(n.name).weight"), taps = s.k * s.k, wt = prepared(taps * s.c)
    prepare.append(loop("t", taps) { e, t in [e.loop("c", s.c) { _, c in
      [.store(.prepared, .c(wt) + t * s.c + c, .load(.params, .c(w.offset) + c * taps + t))]
    }] })
    return wt
  }

  /// `body(oy, run)` for each output row of each run of `runs`, each run's rows split evenly over `parts` (this
  /// part's share, in one loop), the rows left over dealt one by one to the parts in turn across the runs. Left to the
  /// last part, a 7x7 plane's three runs (1, 5 and 1 rows) gave it 5 rows of 7.
  mutating func rowsInParts(_ runs: [Range<Int>], parts: Int, part: IExpr, _ body: (inout Emitter, IExpr, Int) -> [Stmt]) -> [Stmt] {
    var out: [Stmt] = [], next = 0
    for (run, range) in runs.enumerated() {
      let per = range.count / parts
      if per > 0 { out.append(loop("oy", per) { e, v in body(&e, v + part * per + range.lowerBound, run) }) }
      for row in (range.lowerBound + parts * per)..<range.upperBound {
        out.append(.when(.ieq(part, .c(next)), body(&self, .c(row), run)))
        next = (next + 1) % parts
      }
    }
    return out
  }

  /// Runs of consecutive outputs along one axis whose kernel taps inside the input (`0..<size`) are the same:
  /// (outputs, taps), in order.
  static func tapRuns(outputs: Int, size: Int, _ s: DirectConvShape) -> [(range: Range<Int>, taps: [Int])] {
    runs(outputs) { o in (0..<s.k).filter { (0..<size).contains(o * s.stride + $0 * s.dilation - s.padding) } }.map { ($0.range, $0.key) }
  }

  /// The outputs 0..<count in runs of consecutive outputs with equal `key(output)` (the taps a window reads,
  /// known at compile time): (outputs, key), in order.
  static func runs<Key: Equatable>(_ count: Int, key: (Int) -> Key) -> [(range: Range<Int>, key: Key)] {
    var runs: [(range: Range<Int>, key: Key)] = []
    for o in 0..<count {
      let k = key(o)
      if let last = runs.last, last.key == k { runs[runs.count - 1].range = last.range.lowerBound..<(o + 1) } else { runs.append((o..<(o + 1), k)) }
    }
    return runs
  }

  /// A conv tail applied in place to the `count` outputs from `row` just stored (still in L1), as a scalar
  /// loop the back ends vectorise.
  mutating func applyTail(_ tail: ConvTail, to y: Placement, row: IExpr, count: Int) -> [Stmt] {
    guard !tail.isEmpty else { return [] }
    return [loop("i", count) { e, i in
      let o = row + i
      return e.sharedStore(y.base, .c(y.offset) + o, tail.apply(.load(y.base, .c(y.offset) + o), at: o))
    }]
  }

  /// The input gradient: each output gradient scattered to its taps in padded planes, whose interior then
  /// becomes dx.
  mutating func directConvGradInput(_ n: Node, _ a: Conv2DAttrs) {
    let s = Self.directConvShape(a, x: dims(n.args[2]))
    let dy = at(n.args[0]), w = at(n.args[1]), dx = at(n.name), planes = plan.scratch[n.name]!.offset
    body.append(loop("b", s.n) { e, b in [e.loop("g", s.groups) { e, g in
      [e.zeroArena(planes, s.floats), e.loop("f", s.fg) { e, fi in [e.loop("oy", s.oh) { e, oy in
        let o = g * s.fg + fi
        return e.vectorRuns(s.ow) { e, first, lanes in
          let grad = e.fresh("dy")
          return [.vlocal(grad, .load(dy.base, .c(dy.offset) + ((b * s.f + o) * s.oh + oy) * s.ow + first, lanes: lanes))]
            + e.taps(s, planes: .c(planes), oy: oy, first: first) { ci, ky, kx, tap in
              .vstore(.arena, tap, .fma(.broadcast(.load(w.base, .c(w.offset) + s.weight(o, ci, ky, kx))), .local(grad),
                                        .load(.arena, tap, lanes: lanes)), lanes: lanes)
            }
        }
      }] }, e.planeCopy(s, b: b, g: g, x: dx, planes: .c(planes), toPlanes: false)]
    }] })
  }

  /// The weight gradient: per image, group, filter and tap, a vector dot product of the output gradient with
  /// the tap's inputs, its lanes summed in order and added to the filter's gradient.
  mutating func directConvGradWeight(_ n: Node, _ a: Conv2DAttrs) {
    let s = Self.directConvShape(a, x: dims(n.args[1]))
    let dy = at(n.args[0]), x = at(n.args[1]), dw = at(n.name), scratch = plan.scratch[n.name]!.offset
    let planes = scratch, lanesAt = scratch + s.floats, lanes = self.lanes
    body.append(zero(dw))
    body.append(zeroArena(planes, s.floats))
    body.append(loop("b", s.n) { e, b in [e.loop("g", s.groups) { e, g in
      [e.planeCopy(s, b: b, g: g, x: x, planes: .c(planes), toPlanes: true), e.loop("f", s.fg) { e, fi in
        let o = g * s.fg + fi
        return e.small("ci", s.cg) { e, ci in e.small("ky", s.k) { e, ky in
          (0..<s.k).flatMap { kx -> [Stmt] in
            let acc = e.fresh("acc"), total = e.fresh("total"), t = s.tap(kx)
            let dot = e.loop("oy", s.oh) { e, oy in
              e.vectorRuns(s.ow) { _, first, runLanes in
                let tap = IExpr.c(planes) + s.index(ci, row: oy * s.stride + ky * s.dilation, phase: t.phase, column: first + t.shift)
                let grad = VExpr.load(dy.base, .c(dy.offset) + ((b * s.f + o) * s.oh + oy) * s.ow + first, lanes: runLanes)
                return [.vset(acc, .fma(grad, .load(.arena, tap, lanes: runLanes), .local(acc)))]
              }
            }
            return [.vlocal(acc, .zero), dot, .vstore(.arena, .c(lanesAt), .local(acc), lanes: lanes), .local(total, .load(.arena, .c(lanesAt)))]
              + (1..<lanes).map { .set(total, .local(total) + .load(.arena, .c(lanesAt + $0))) }
              + [.accumulate(dw.base, .c(dw.offset) + s.weight(o, ci, ky, kx), .local(total))]
          }
        } }
      }]
    }] })
  }
}
