import GraphIR
import Passes

/// Channels-last convs of any kernel, stride and padding (one group) through a pixel-major column matrix:
/// col[pixel][tap and channel] for a band of output rows, then C[pixels x F] = col * W^T[k*k*C x F], the GEMM's
/// vectors along the filters and its rows the pixels, the epilogue in the micro-kernel as in the 1x1 conv.
///
/// A channels-last input makes each column row k*k runs of C contiguous floats (`(ky * k + kx) * C + c`), copied as
/// vectors; an NCHW input (a stem reading the model's image) keeps the weights' own order (`(c * k + ky) * k + kx`).
/// Either way a pixel's row is written contiguously and read along K by the micro-kernel: the earlier channels-last
/// stem read an NCHW column matrix transposed, a stride of a plane per K step, and took 2.9x its NCHW time.
extension Emitter {
  /// The output rows per band of a channels-last column conv: the whole image when its columns take at most
  /// `wholeImageShareOfL2` of L2, else the largest divisor of the output height whose band's columns take at most
  /// `bandShareOfL2` of it (at least one row), so each band's columns are written and read by the GEMM in L2.
  /// Every band's GEMM reads all of W^T: ResNet-18's 512-channel 7x7 convs (9.4 MB of weights) in bands of one row
  /// took 3.7 times as long as whole.
  ///
  /// Weights that leave half of L2 are streamed from L3 by every band: with fewer images than the pool's parts, the
  /// whole image is one band while its columns fit L2, its GEMM split by filters (ResNet-50's 256-channel 3x3
  /// stride-2 conv, 2.4 MB of weights, in 7 bands of 2 rows took 2.4x the other engine's time at batch 1). A program
  /// of several images on one core keeps the small bands: whole, the columns left L2 beside the streamed weights.
  static func columnBandRows(_ s: ConvShape, target: Target) -> Int {
    let rowFloats = s.ow * s.ckk, l2 = target.l2 / MemoryLayout<Float>.size, weights = s.ckk * s.f
    if Double(s.oh * rowFloats) <= Double(l2) * wholeImageShareOfL2 { return s.oh }
    if weights > l2 / 2, s.n < target.parallelParts, s.oh * rowFloats <= l2 { return s.oh }
    // ResNet-18's first stride-2 3x3 conv at batch 1, in 7 bands of 4 rows, ran on one core (14 bands of 2 split evenly).
    return evenBands(s.oh, images: s.n, target: target) { $0 * rowFloats <= l2 / bandShareOfL2 } ?? 1
  }

  /// The fewest floats per column row (C * k * k) a conv runs channels-last through columns with: MobileNetV2's 3x3
  /// stem on 3 channels (27) took 250 us that way against 168 NCHW at batch 1; ResNet's 7x7 one (147) took about
  /// its NCHW time, and its max pool then ran channels-last in a third of its NCHW time.
  static let leastColumnDepth = 64

  /// The share of L2 a whole image's columns may take as one band.
  static let wholeImageShareOfL2 = 0.5

  /// Scratch of a channels-last column conv: one band's columns for each part of the pool.
  static func columnFloats(_ s: ConvShape, target: Target) -> Int { target.parallelParts * columnBandRows(s, target: target) * s.ow * s.ckk }

  /// A conv whose result is channels-last ([N, H, W, F]), through pixel-major columns in bands of output rows;
  /// the bands split over the pool, each part with a column buffer of its own. W^T is packed once per set of
  /// weights in the columns' K order.
  mutating func convColumnsChannelsLast(_ n: Node, _ a: Conv2DAttrs, relu: Bool, tail: ConvTail) {
    let x = at(n.args[0]), s = convShape(a, x: dims(n.args[0])), w = at("\(n.name).weight"), inputLast = channelsLast.contains(n.args[0])
    let epilogue = ConvEpilogue(n: n, s: s, tmp: 0, table: 0, window: 1, pooled: 0, y: at(n.name),
                                bias: a.bias ? at("\(n.name).bias") : nil, fold: foldOperand(n, scaled: a.scaled))
    let macs = s.n * s.f * s.plane * s.ckk
    var bandRows = Self.columnBandRows(s, target: target)
    func width(_ rows: Int) -> Int { GemmBlocking.choose(m: rows * s.ow, n: s.f, k: s.ckk, target: target).vectors * lanes }
    // Fewer bands than the pool's parts (a whole image at batch 1): the GEMM splits by filters in whole panels of
    // W^T, so each core reads part of the weights; where the filters do not split, the bands shrink until there
    // are as many as parts.
    let filterParts = filterSplitParts(filters: s.f, width: width(bandRows), macs: macs)
    let byFilters = s.n * (s.oh / bandRows) < target.parallelParts && filterParts > 1
    if !byFilters, s.n * (s.oh / bandRows) < target.parallelParts, parallelParts(macs: macs) > 1 {
      bandRows = (1...bandRows).last { s.oh % $0 == 0 && s.n * (s.oh / $0) >= target.parallelParts } ?? 1
    }
    let perImage = s.oh / bandRows, bands = s.n * perImage, pixels = bandRows * s.ow, k = a.kernel, kk = k * k
    let parts = parallelParts(units: bands, macs: macs)
    let vectors = width(bandRows) / lanes, width = vectors * lanes
    // K index p of (channel, tap): the columns' order.
    let p: (IExpr, Int) -> IExpr = inputLast ? { c, tap in c + tap * s.c } : { c, tap in c * kk + tap }
    let wt = preparedWeightsT(w, s, taps: kk, width: width, p: p)
    let scratch = plan.scratch[n.name]!.offset
    // The GEMM of a band's columns for the filters (first, count): a first filter on a panel of W^T.
    func gemm(_ e: inout Emitter, col: IExpr, image: IExpr, first: IExpr, filters: (first: IExpr, count: Int)? = nil) -> [Stmt] {
      let start = image * s.plane + first * s.ow, (f0, fs) = filters ?? (.c(0), s.f)
      var gemm = TiledGemm(m: pixels, n: fs, k: s.ckk, a: (.arena, col), aRow: s.ckk, aCol: 1, b: (.prepared, .c(wt) + f0 * s.ckk), ldb: width,
                           c: (epilogue.y.base, .c(epilogue.y.offset) + f0 + start * s.f), ldc: s.f, accumulate: false, calls: bands)
      gemm.packedVectors = vectors
      gemm.epilogue = { row, column, v in epilogue.finished(v, column + f0, relu: relu, tail: tail, at: (start + row) * s.f + column + f0) }
      return e.tiledGemm(gemm)
    }
    // Split by filters: each band's columns split by rows, then its GEMM by filters.
    if byFilters {
      let col = IExpr.c(scratch)
      body.append(loop("band", bands) { e, band in
        let image = IExpr.div(band, perImage), first = IExpr.rem(band, perImage) * bandRows
        let rowParts = e.parallelParts(units: bandRows, macs: pixels * s.ckk * Self.elementwiseWeight)
        return e.inParts(rowParts, of: "rows") { e, part in
          e.rowsInParts([0..<bandRows], parts: rowParts, part: part) { e, row, _ in
            e.pixelColumns(a, s, x: x, inputLast: inputLast, image: image, rows: (first + row, 1), col: col + row * (s.ow * s.ckk), p: p)
          }
        } + e.inParts(filterParts, of: "filters") { e, part in
          e.filterRanges(s.f, width: width, parts: filterParts, part: part) { e, range in gemm(&e, col: col, image: image, first: first, filters: range) }
        }
      })
      return
    }
    body += inParts(parts, of: "row bands") { e, part in
      e.rowsInParts([0..<bands], parts: parts, part: part) { e, band, _ in
        let image = IExpr.div(band, perImage), first = IExpr.rem(band, perImage) * bandRows
        let col = IExpr.c(scratch) + part * (pixels * s.ckk)
        return e.pixelColumns(a, s, x: x, inputLast: inputLast, image: image, rows: (first, bandRows), col: col, p: p)
          + gemm(&e, col: col, image: image, first: first)
      }
    }
  }

  /// W^T[k*k*C x F] of conv weights `w` ([F][C][k][k]) packed once per set of weights in column panels of `width`
  /// filters (`TiledGemm.packedVectors`), row p(c, tap) holding channel c's tap: its offset in the prepared buffer.
  mutating func preparedWeightsT(_ w: Placement, _ s: ConvShape, taps: Int, width: Int, p: (IExpr, Int) -> IExpr) -> Int {
    let wt = prepared((s.f + width - 1) / width * width * s.ckk)
    prepare.append(loop("c", s.c) { e, c in (0..<taps).map { tap in e.loop("f", s.f) { _, f in
      [.store(.prepared, .c(wt) + GemmBlocking.packedIndex(p(c, tap), f, k: s.ckk, width: width), .load(.params, .c(w.offset) + f * s.ckk + c * taps + tap))]
    } } })
    return wt
  }

  /// The parts a GEMM along `filters` splits into by whole panels of `width` filters for a pool (1: unsplit).
  func filterSplitParts(filters: Int, width: Int, macs: Int) -> Int {
    let parts = parallelParts(macs: macs), panels = (filters + width - 1) / width
    return panels >= parts ? parts : 1
  }

  /// `body(first filter, count)` for part `part` of `parts` of `filters` in whole panels of `width`: an equal
  /// number of panels each, the last part also the rest (its last panel maybe short).
  mutating func filterRanges(_ filters: Int, width: Int, parts: Int, part: IExpr,
                             _ body: (inout Emitter, (first: IExpr, count: Int)) -> [Stmt]) -> [Stmt] {
    let per = (filters + width - 1) / width / parts * width, last = filters - (parts - 1) * per
    guard last != per else { return body(&self, (part * per, per)) }
    return [.when(.ilt(part, .c(parts - 1)), body(&self, (part * per, per))), .when(.ieq(part, .c(parts - 1)), body(&self, (.c((parts - 1) * per), last)))]
  }

  /// The pixel-major columns of output rows `rows` (first, count) of `image`: col[(row * ow + ox) * ckk + p(c, tap)],
  /// zero where the tap falls in the padding. Per output row and kernel row, the input row's validity is one test;
  /// each tap column's valid outputs are a static range (`validRange`), the rest stored as zeros.
  mutating func pixelColumns(_ a: Conv2DAttrs, _ s: ConvShape, x: Placement, inputLast: Bool, image: IExpr,
                             rows: (first: IExpr, count: Int), col: IExpr, p: @escaping (IExpr, Int) -> IExpr) -> [Stmt] {
    let k = a.kernel
    func source(_ c: IExpr, _ iy: IExpr, _ ix: IExpr) -> IExpr {
      inputLast ? .c(x.offset) + ((image * s.h + iy) * s.w + ix) * s.c + c : .c(x.offset) + ((image * s.c + c) * s.h + iy) * s.w + ix
    }
    // Every (channel, tap column) of kernel row ky for output row `row` and input row iy (nil: padding).
    func taps(_ e: inout Emitter, _ row: IExpr, _ ky: IExpr, _ iy: IExpr?) -> [Stmt] {
      inputLast ? lastTaps(&e, row, ky, iy) : planarTaps(&e, row, ky, iy)
    }
    // Channels-last: per tap column, each output's C channels are one contiguous run on both sides (vectors).
    func lastTaps(_ e: inout Emitter, _ row: IExpr, _ ky: IExpr, _ iy: IExpr?) -> [Stmt] {
      (0..<k).flatMap { kx -> [Stmt] in
        let valid = iy == nil ? 0..<0 : Self.validRange(step: a.stride, shift: kx - a.padding, size: s.w, outputs: s.ow)
        let runs = [(0..<valid.lowerBound, false), (valid, true), (valid.upperBound..<s.ow, false)].filter { !$0.0.isEmpty }
        return runs.map { range, inside in
          e.loop("ox", range.count) { e, v in
            let ox = v + range.lowerBound
            return [e.loop("c", s.c) { _, c in
              let to = col + (row * s.ow + ox) * s.ckk + p(c, kx) + ky * (k * s.c)
              let value: FExpr = inside ? .load(x.base, source(c, iy!, ox * a.stride + (kx - a.padding))) : .c(0)
              return [.store(.arena, to, value)]
            }]
          }
        }
      }
    }
    // NCHW: per output and channel, the k taps of the kernel row are k adjacent floats on both sides, unrolled; the
    // outputs run in stretches whose valid taps are the same (`runs`), so no store tests a bound.
    func planarTaps(_ e: inout Emitter, _ row: IExpr, _ ky: IExpr, _ iy: IExpr?) -> [Stmt] {
      let stretches = Self.runs(s.ow) { ox in iy == nil ? [] : (0..<k).filter { (0..<s.w).contains(ox * a.stride + $0 - a.padding) } }
      return stretches.map { range, valid in
        e.loop("ox", range.count) { e, v in
          let ox = v + range.lowerBound
          return [e.loop("c", s.c) { _, c in
            (0..<k).map { kx in
              let to = col + (row * s.ow + ox) * s.ckk + p(c, kx) + ky * k
              return .store(.arena, to, valid.contains(kx) ? .load(x.base, source(c, iy!, ox * a.stride + (kx - a.padding))) : .c(0))
            }
          }]
        }
      }
    }
    return [loop("oy", rows.count) { e, row in
      let oy = rows.first + row
      return [e.loop("ky", k) { e, ky in
        let iy = oy * a.stride + ky + .c(-a.padding)
        return [.when(.and(.ilt(.c(-1), iy), .ilt(iy, .c(s.h))), taps(&e, row, ky, iy)),
                .when(.ilt(iy, .c(0)), taps(&e, row, ky, nil)),
                .when(.ilt(.c(s.h - 1), iy), taps(&e, row, ky, nil))]
      }]
    }]
  }
}
