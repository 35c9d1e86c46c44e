import GraphIR
import Passes

/// An int8 conv (`Conv2DAttrs.quantization`, inference only; the arithmetic is GraphIR's `Int8Arithmetic`). Per image, the
/// input's u8 steps packed in quads of four channels (one word per pixel and quad: `FExpr.bytes`), im2col over
/// those words (none for a 1x1 conv of stride 1 without padding), then the register-blocked GEMM with the u8 x s8
/// dot product into 32-bit sums, each filter's starting at its zero point's correction. K runs over (channel
/// quad, ky, kx), so im2col moves a quarter of an f32 conv's columns. The GEMM's epilogue scales the sums back to
/// f32 and applies the bias, folded batch norm, relu and tail as it stores the output. The weights' s8 quads,
/// scales and corrections are prepared once per set of weights.
extension Emitter {
  /// Where an int8 conv's prepared weights are, in the prepared buffer: the s8 quads ([filters x K quads], channels
  /// past the last zero), each filter's output scale (input scale x weight scale) and the bits of its correction
  /// (the sum starts at -zero point x the sum of its weights, so the GEMM's u8 steps need no zero point subtracted).
  struct Int8Weights {
    let quads: Int, scales: Int, corrections: Int
  }

  mutating func int8Conv(_ n: Node, _ a: Conv2DAttrs, _ q: Quantization, relu: Bool, tail: ConvTail) {
    let xd = dims(n.args[0]), x = at(n.args[0]), o = a.output(xd)
    // The conv as im2col sees it: channels are quads of channels, each element one word; with fewer channels than
    // a quad (a first layer's 1 or 3), the channels themselves, with quads along each kernel row (`int8FewChannels`).
    let fewChannels = xd[1] < 4, channelQuads = (xd[1] + 3) / 4
    let s = ConvShape(n: xd[0], c: fewChannels ? xd[1] : channelQuads, h: xd[2], w: xd[3], f: a.filters, k: a.kernel, oh: o.h, ow: o.w, group: 1)
    let weights = int8Weights(at("\(n.name).weight"), filters: s.f, channels: xd[1], kernel: s.k, alongRows: fewChannels, q)
    convs.append(ConvChoice(node: n.name, algorithm: .im2col, tile: 2,
                            reason: "int8: " + int8DotName(q)))
    let epilogue = ConvEpilogue(n: n, s: s, tmp: 0, table: 0, window: 1, pooled: 0, y: at(n.name),
                                bias: a.bias ? at("\(n.name).bias") : nil, fold: foldOperand(n, scaled: a.scaled))
    let inPlace = a.kernel == 1 && a.stride == 1 && a.padding == 0, macs = s.n * s.f * s.plane * xd[1] * s.k * s.k
    let geometry = Int8Geometry(a: a, s: s, channels: xd[1], x: x, q: q, weights: weights, epilogue: epilogue, relu: relu, tail: tail, macs: macs)
    // Images split over the pool where the batch allows (one parallel statement per call), else each image's steps.
    let imageParts = parallelParts(units: s.n, macs: macs), per = s.n / imageParts
    if fewChannels { return int8FewChannels(geometry, imageParts: imageParts) }
    // Columns whose whole matrix would leave L2 (ResNet-18's 56x56 layers: 1.8 MB a image) are made and multiplied in
    // bands of output rows (`rowBand`), split over the pool at batch 1.
    let band = Self.rowBand(s, window: 1, pool: nil, inPlace: inPlace, target: target), width = band.map { $0 * s.ow } ?? s.plane
    let copies = band.map { imageParts == 1 ? parallelParts(units: s.oh / $0, macs: macs) : imageParts } ?? imageParts
    // Scratch for each part: its quads' image (part p's p images after the first, so im2col reads image p of a
    // batch that starts at the first) and columns.
    let planes = Self.constant(tailScratch(s.c * s.h * s.w * imageParts)), columns = inPlace ? nil : tailScratch(s.ckk * width * copies)
    body += inParts(imageParts, of: "images") { e, part in
      [e.loop("g", per) { e, gv in
        e.int8Image(geometry, g: part * per + gv, planes: planes, copy: part, columns: columns.map { $0 + part * (s.ckk * width) },
                    band: band, split: imageParts == 1)
      }]
    }
  }

  /// An int8 conv of fewer channels than a quad (a first layer's 1 or 3), its quads along each kernel row instead:
  /// word (c, y, x) of the image's sliding quads holds the steps of pixels x ..< x + 4 of row y of channel c, in a
  /// plane padded at the zero point's step, so row ky of the window at output column ox is the ceil(k / 4) words at
  /// x = ox x stride + 4t (taps past k meet zero weights). Per image the steps go into the padded plane and are packed
  /// into the sliding quads (vector loops, once); per band of output rows whose columns stay in L2, im2col copies
  /// words (K = channels x k x ceil(k / 4) quads: 42 for ResNet's 7x7 stem, 14% more products than 37 quads packed
  /// densely, but no f32 column matrix and no packing per band), then the GEMM writes the band's rows. A batch's
  /// images split over the pool, else (batch 1) the bands.
  mutating func int8FewChannels(_ d: Int8Geometry, imageParts: Int) {
    let (s, a) = (d.s, d.a), taps = Self.wordTaps(s.k), quads = s.c * s.k * taps, per = s.n / imageParts
    // The padded plane: rows -padding ..< h + padding, and every column a window's words read (and the image's).
    // Windows start at columns ox x stride + 4t: with a stride dividing 4, only every stride-th word is read, and
    // only those are made, so that im2col's reads are consecutive (word j is column j x wordStep).
    let wordStep = 4 % a.stride == 0 ? a.stride : 1
    let rows = s.h + 2 * a.padding, wordColumns = ((s.ow - 1) * a.stride + 4 * (taps - 1)) / wordStep + 1
    let columnsOfPlane = max((wordColumns - 1) * wordStep + 4, s.w + 2 * a.padding), plane = s.c * rows * columnsOfPlane
    let words = s.c * rows * wordColumns
    let budget = target.l2 / Self.bandShareOfL2 / MemoryLayout<Float>.size
    let band = Self.evenBands(s.oh, images: 1, target: target) { $0 * quads * s.ow <= budget } ?? 1, width = band * s.ow, bands = s.oh / band
    let bandParts = imageParts == 1 ? parallelParts(units: bands, macs: d.macs) : 1, copies = imageParts * bandParts
    let planes = Self.constant(tailScratch(plane * imageParts)), slides = Self.constant(tailScratch(words * imageParts))
    let columns = tailScratch(quads * width * copies)
    body += inParts(imageParts, of: "images") { e, part in
      [e.loop("g", per) { e, gv in
        let g = part * per + gv, padded = IExpr.c(planes) + part * plane, slide = IExpr.c(slides) + part * words
        var out = e.slidingQuads(d, image: g, padded: padded, slide: slide, rows: rows, columnsOfPlane: columnsOfPlane,
                                 wordColumns: wordColumns, wordStep: wordStep)
        out += e.inParts(bandParts, of: "row bands") { e, bandPart in
          let columns = columns + (part + bandPart) * (quads * width)
          return [e.loop("band", bands / bandParts) { e, bv in
            let first = (bandPart * (bands / bandParts) + bv) * band
            let im2col = e.loop("c", s.c) { e, c in
              [e.loop("ky", s.k) { e, ky in
                [e.loop("t", taps) { e, t in
                  [e.loop("oy", band) { e, oy in
                    [e.loop("ox", s.ow) { _, ox in
                      [.store(.arena, columns + (((c * s.k + ky) * taps + t) * band + oy) * s.ow + ox,
                              .load(.arena, slide + (c * rows + (first + oy) * a.stride + ky) * wordColumns + ox * (a.stride / wordStep)
                                      + t * (4 / wordStep)))]
                    }]
                  }]
                }]
              }]
            }
            return [im2col] + e.int8Gemm(d, g: g, b: (.arena, columns), k: quads, columns: (first * s.ow, width), parts: 1)
          }]
        }
        return out
      }]
    }
  }

  /// Image `g`'s sliding quads for `int8FewChannels`: its steps in a plane at `padded` (`rows` x `columnsOfPlane` per
  /// channel: the padding rows and, beside each image row, its padding columns at the zero point's step, written once
  /// and not under the steps), then each row's four neighbours per word at `slide` (`wordColumns` per row).
  mutating func slidingQuads(_ d: Int8Geometry, image g: IExpr, padded: IExpr, slide: IExpr, rows: Int, columnsOfPlane: Int,
                             wordColumns: Int, wordStep: Int) -> [Stmt] {
    let (s, x, q, a) = (d.s, d.x, d.q, d.a), zero = FExpr.c(Float(q.zeroPoint)), right = columnsOfPlane - a.padding - s.w
    let steps = loop("c", s.c) { e, c in
      let channel = padded + c * (rows * columnsOfPlane)
      var code: [Stmt] = []
      if a.padding > 0 {
        code.append(e.elementwise(a.padding * columnsOfPlane) { i in .store(.arena, channel + i, zero) })
        code.append(e.elementwise(a.padding * columnsOfPlane) { i in .store(.arena, channel + (a.padding + s.h) * columnsOfPlane + i, zero) })
      }
      code.append(e.loop("y", s.h) { e, y in
        let row = channel + (y + a.padding) * columnsOfPlane
        var line: [Stmt] = []
        if a.padding > 0 { line.append(e.elementwise(a.padding) { i in .store(.arena, row + i, zero) }) }
        line.append(e.elementwise(s.w) { i in
          .store(.arena, row + a.padding + i, Self.int8Step(.load(x.base, .c(x.offset) + ((g * s.c + c) * s.h + y) * s.w + i), q))
        })
        if right > 0 { line.append(e.elementwise(right) { i in .store(.arena, row + (a.padding + s.w) + i, zero) }) }
        return line
      })
      return code
    }
    let words = loop("r", s.c * rows) { e, r in
      [e.elementwise(wordColumns) { i in
        let at = padded + r * columnsOfPlane + i * wordStep
        return .store(.arena, slide + r * wordColumns + i, .bytes(.load(.arena, at), .load(.arena, at + 1), .load(.arena, at + 2), .load(.arena, at + 3)))
      }]
    }
    return [steps, words]
  }

  /// The words of sliding quads one kernel row of `k` taps takes (`int8FewChannels`).
  static func wordTaps(_ k: Int) -> Int { (k + 3) / 4 }

  /// What every image of an int8 conv shares.
  struct Int8Geometry {
    let a: Conv2DAttrs, s: ConvShape, channels: Int, x: Placement, q: Quantization, weights: Int8Weights
    let epilogue: ConvEpilogue, relu: Bool, tail: ConvTail, macs: Int
  }

  /// One image `g` of an int8 conv: its quads of channels into copy `copy` of the quad images at `planes`, im2col
  /// into `columns` (none: the GEMM reads the quads), the GEMM and its epilogue; with `split`, each step across the
  /// pool. Given a `band` of output rows, im2col and the GEMM run band by band (each part of the pool its bands,
  /// in columns of its own after `columns`).
  mutating func int8Image(_ d: Int8Geometry, g: IExpr, planes: Int, copy: IExpr, columns: IExpr?, band: Int?, split: Bool) -> [Stmt] {
    let (s, x, q, channels) = (d.s, d.x, d.q, d.channels), pixels = s.h * s.w, image = s.c * pixels
    let parts = split ? parallelParts(units: s.f, macs: d.macs) : 1, copyParts = split ? parallelParts(units: s.c, macs: d.macs) : 1
    let pixelParts = split ? parallelParts(macs: d.macs) : 1, at = IExpr.c(planes) + copy * image
    // The zero point's step in every byte: what padding holds.
    let zero = FExpr.c(Float(q.zeroPoint)), zeroQuad = FExpr.bytes(zero, zero, zero, zero)
    var out = packChannelQuads(x, image: g, pixels: pixels, channels: channels, into: at, q, parts: pixelParts)
    var b: (Base, IExpr) = (.arena, at)
    let quadImages = Placement(base: .arena, offset: planes, count: image)
    if let columns, let band {
      let bands = s.oh / band, width = band * s.ow, bandParts = split ? parallelParts(units: bands, macs: d.macs) : 1
      return out + inParts(bandParts, of: "row bands") { e, part in
        let columns = columns + part * (s.ckk * width)
        return [e.loop("band", bands / bandParts) { e, bv in
          let first = (part * (bands / bandParts) + bv) * band
          return e.im2colRows(d.a, s, x: quadImages, g: copy, col: columns, rows: (first, band), padding: zeroQuad)
            + e.int8Gemm(d, g: g, b: (.arena, columns), k: s.ckk, columns: (first * s.ow, width), parts: 1)
        }]
      }
    }
    if let columns {
      out += inParts(copyParts, of: "channel quads") { e, part in
        e.im2colRows(d.a, s, x: quadImages, g: copy, col: columns, channels: (part * (s.c / copyParts), s.c / copyParts), padding: zeroQuad)
      }
      b = (.arena, columns)
    }
    return out + int8Gemm(d, g: g, b: b, k: s.ckk, columns: (.c(0), s.plane), parts: parts)
  }

  /// The GEMM of image `g` of an int8 conv over `k` quads of B (`columns.count` columns, the output plane's from
  /// `columns.first`), split by filters into `parts`, its epilogue storing the output.
  mutating func int8Gemm(_ d: Int8Geometry, g: IExpr, b: (Base, IExpr), k: Int, columns: (first: IExpr, count: Int), parts: Int) -> [Stmt] {
    let s = d.s, rows = s.f / parts, (weights, epilogue) = (d.weights, d.epilogue)
    return inParts(parts, of: "output channels") { e, part in
      let f0 = part * rows
      var gemm = TiledGemm(m: rows, n: columns.count, k: k, a: (.prepared, .c(weights.quads) + f0 * k), aRow: k, aCol: 1,
                           b: b, ldb: columns.count, c: (epilogue.y.base, .c(epilogue.y.offset) + (g * s.f + f0) * s.plane + columns.first),
                           ldc: s.plane, accumulate: false, calls: s.n * parts * (s.plane / columns.count))
      gemm.sumQuads(of: d.q)
      gemm.startsAt = { row in .load(.prepared, .c(weights.corrections) + f0 + row) }
      gemm.epilogue = { row, column, v in
        let fi = row + f0
        return epilogue.finished(.fromInt32(v) * .load(.prepared, .c(weights.scales) + fi), fi, relu: d.relu, tail: d.tail,
                                 at: (g * s.f + fi) * s.plane + columns.first + column)
      }
      return e.tiledGemm(gemm)
    }
  }

  /// A 1x1 int8 conv of stride 1 without padding whose result is channels-last ([N, H, W, F]): C[pixels x F] =
  /// A[pixels x quads] * W^T[quads x F], the GEMM's vectors along the filters and its rows the pixels. A is the
  /// input's u8 steps in quads of four channels: each pixel's row of quads from a channels-last input (the batch's
  /// pixels in one GEMM), each quad's row of pixels from an NCHW one (one GEMM per image). W^T's s8 quads are
  /// prepared once; each filter's correction starts its column, and the epilogue finishes each element as stored.
  mutating func int8ConvChannelsLast(_ n: Node, _ a: Conv2DAttrs, _ q: Quantization, relu: Bool, tail: ConvTail) {
    let x = at(n.args[0]), xd = dims(n.args[0]), inputLast = channelsLast.contains(n.args[0])
    let (c, f, plane) = (xd[1], a.filters, xd[2] * xd[3]), quads = (c + 3) / 4
    let s = ConvShape(n: xd[0], c: c, h: xd[2], w: xd[3], f: f, k: 1, oh: xd[2], ow: xd[3], group: 1)
    let weights = int8Weights(at("\(n.name).weight"), filters: f, channels: c, kernel: 1, alongRows: false, transposed: true, q)
    convs.append(ConvChoice(node: n.name, algorithm: .im2col, tile: 2,
                            reason: "int8 channels-last: " + int8DotName(q)))
    let epilogue = ConvEpilogue(n: n, s: s, tmp: 0, table: 0, window: 1, pooled: 0, y: at(n.name),
                                bias: a.bias ? at("\(n.name).bias") : nil, fold: foldOperand(n, scaled: a.scaled))
    // Blocks of pixels with one A each: the batch (channels-last input) or an image (NCHW input).
    let (blocks, m) = inputLast ? (1, s.n * plane) : (s.n, plane), macs = s.n * f * plane * c
    // The pixels split over the pool, as the f32 conv splits them, so that each core writes whole rows of the output
    // and a layer after it split by rows reads them where they were written. Split by filters, at batch 1 with its
    // two cores far apart on the host, MobileNetV2's first blocks took 4 times as long as with them near. Filters
    // only when the weights would take half of L2, so that each core streams its share of them.
    let filterParts = parallelParts(units: f, macs: macs), byFilters = quads * f * MemoryLayout<Float>.size > target.l2 / 2 && filterParts > 1
    let pixelParts = byFilters ? 1 : parallelParts(macs: macs), packParts = inputLast ? parallelParts(units: m, macs: macs) : parallelParts(macs: macs)
    let packed = tailScratch(m * quads)
    body.append(loop("g", blocks) { e, g in
      let pack = inputLast ? e.packPixelQuads(x, pixels: m, channels: c, into: packed, q, parts: packParts)
        : e.packChannelQuads(x, image: g, pixels: m, channels: c, into: packed, q, parts: packParts)
      /// The GEMM of `count` pixels from `r0` and `filters` filters from `f0`.
      func gemm(_ e: inout Emitter, pixels r0: IExpr, count: Int, filters f0: IExpr, _ filters: Int, parts: Int) -> [Stmt] {
        let a = packed + (inputLast ? r0 * quads : r0)
        var gemm = TiledGemm(m: count, n: filters, k: quads, a: (.arena, a), aRow: inputLast ? quads : 1, aCol: inputLast ? 1 : m,
                             b: (.prepared, .c(weights.quads) + f0), ldb: f, c: (epilogue.y.base, .c(epilogue.y.offset) + (g * m + r0) * f + f0),
                             ldc: f, accumulate: false, calls: blocks * parts)
        gemm.sumQuads(of: q, columnStarts: (.prepared, .c(weights.corrections) + f0))
        gemm.epilogue = { row, column, v in
          let fi = column + f0
          return epilogue.finished(.fromInt32(v) * .load(.prepared, .c(weights.scales) + fi), fi, relu: relu, tail: tail,
                                   at: (g * m + r0 + row) * f + fi)
        }
        return e.tiledGemm(gemm)
      }
      if byFilters {
        return pack + e.inParts(filterParts, of: "filters") { e, part in
          gemm(&e, pixels: .c(0), count: m, filters: part * (f / filterParts), f / filterParts, parts: filterParts)
        }
      }
      // Each part's share of the pixels, the remainder to the last (a 7x7 plane's 49: 24 and 25).
      return pack + e.inParts(pixelParts, of: "pixels") { e, part in
        e.evenShare(m, parts: pixelParts, part: part) { e, first, count in gemm(&e, pixels: first, count: count, filters: .c(0), f, parts: pixelParts) }
      }
    })
  }

  /// An int8 dense layer (`DenseAttrs.quantization`): Y[batch x units] = X's u8 quads (each row packed along its
  /// features, as a channels-last pixel's channels) x W^T's s8 quads prepared once, the GEMM's vectors along the
  /// units, each unit's correction starting its column, the epilogue converting, scaling and finishing each element.
  mutating func int8Dense(_ d: DenseForward, _ q: Quantization) {
    let quads = (d.features + 3) / 4, macs = d.batch * d.units * d.features
    let weights = int8Weights(d.w, filters: d.units, channels: d.features, kernel: 1, alongRows: false, transposed: true, q)
    let parts = parallelParts(units: d.units, macs: macs), packed = tailScratch(d.batch * quads), columns = d.units / parts
    body += packPixelQuads(d.x, pixels: d.batch, channels: d.features, into: packed, q, parts: parallelParts(units: d.batch, macs: macs))
    body += inParts(parts, of: "units") { e, part in
      let u0 = part * columns
      var gemm = TiledGemm(m: d.batch, n: columns, k: quads, a: (.arena, packed), aRow: quads, aCol: 1, b: (.prepared, .c(weights.quads) + u0),
                           ldb: d.units, c: (d.y.base, .c(d.y.offset) + u0), ldc: d.units, accumulate: false, calls: parts)
      gemm.sumQuads(of: q, columnStarts: (.prepared, .c(weights.corrections) + u0))
      gemm.epilogue = { _, column, v in d.finish(.fromInt32(v) * .load(.prepared, .c(weights.scales) + u0 + column), u0 + column) }
      return e.tiledGemm(gemm)
    }
  }

  /// The u8 steps of `pixels` channels-last pixels of `channels` floats each, in quads along each pixel's channels:
  /// pixel p's row of quads at `into` + p x quads, each vector of quads from four vectors of the row
  /// (`VExpr.packBytes`), channels past the last at the zero point's step. Pixels split among `parts`.
  mutating func packPixelQuads(_ x: Placement, pixels: Int, channels: Int, into: IExpr, _ q: Quantization, parts: Int) -> [Stmt] {
    let lanes = self.lanes, quads = (channels + 3) / 4, per = pixels / parts
    return inParts(parts, of: "pixels") { e, part in
      [e.loop("p", per) { e, pv in
        let p = part * per + pv, row = IExpr.c(x.offset) + p * channels
        // The vector of quads from channel `first`, `count` channels of it present.
        func words(_ first: IExpr, count: Int) -> VExpr {
          let chunks = (0..<4).map { k -> VExpr in
            let present = min(lanes, max(0, count - k * lanes))
            return Self.int8Steps(present == 0 ? .zero : .load(x.base, row + first + k * lanes, lanes: present), q)
          }
          return .packBytes(chunks[0], chunks[1], chunks[2], chunks[3])
        }
        let full = channels / (4 * lanes), rest = channels % (4 * lanes)
        var out: [Stmt] = []
        if full > 0 {
          out.append(e.loop("v", full) { _, v in [.vstore(.arena, into + p * quads + v * lanes, words(v * (4 * lanes), count: 4 * lanes), lanes: lanes)] })
        }
        if rest > 0 { out.append(.vstore(.arena, into + p * quads + full * lanes, words(.c(full * 4 * lanes), count: rest), lanes: (rest + 3) / 4)) }
        return out
      }]
    }
  }

  /// The u8 steps of image `image` of an NCHW input in quads of four channels, each quad's row of `pixels` words at
  /// `into` + quad x pixels (channels past the last at the zero point's step). The pixels split among `parts`, the
  /// remainder to the last: each part packs every quad of its own rows, which the part of the layer before that split
  /// its rows wrote (split by quads, each core read half its input from the other).
  mutating func packChannelQuads(_ x: Placement, image: IExpr, pixels: Int, channels: Int, into: IExpr, _ q: Quantization, parts: Int) -> [Stmt] {
    let zero = FExpr.c(Float(q.zeroPoint)), full = channels / 4
    /// Pixels first ..< first + count of every quad.
    func pack(_ e: inout Emitter, first: IExpr, count: Int) -> [Stmt] {
      func quad(_ e: inout Emitter, _ cq: IExpr, present: Int) -> Stmt {
        e.elementwise(count) { v in
          let i = first + v
          let steps = (0..<4).map { k in
            k < present ? Self.int8Step(.load(x.base, .c(x.offset) + image * (channels * pixels) + (cq * 4 + k) * pixels + i), q) : zero
          }
          return .store(.arena, into + cq * pixels + i, .bytes(steps[0], steps[1], steps[2], steps[3]))
        }
      }
      var out = full == 0 ? [] : [e.loop("cq", full) { e, cq in [quad(&e, cq, present: 4)] }]
      if channels % 4 > 0 { out.append(quad(&e, .c(full), present: channels % 4)) }
      return out
    }
    return inParts(parts, of: "pixels") { e, part in e.evenShare(pixels, parts: parts, part: part) { e, first, count in pack(&e, first: first, count: count) } }
  }

  /// How this target computes an int8 layer's dot products (`VExpr.dotU8S8`), for the plan.
  func int8DotName(_ q: Quantization) -> String {
    target.int8Dot ? "u8 x s8 dot product"
      : !target.int8Pairs ? "dot product by shifts and multiplies"
      : q.pairsFitInt16 ? "u8 x s8 pairs summed in 16 bits (reduced-range weights)" : "bytes widened to 16-bit pairs (no VNNI)"
  }

  /// The value of a constant index expression (scratch taken outside any part).
  static func constant(_ e: IExpr) -> Int {
    guard case .c(let v) = e else { preconditionFailure("scratch outside a part has a constant offset") }
    return v
  }

  /// `Int8Arithmetic.activation` of `v` in the kernel IR, in its steps' order.
  static func int8Step(_ v: FExpr, _ q: Quantization) -> FExpr {
    clampedStep(.round(v / .c(q.scale)) + .c(Float(q.zeroPoint)), low: 0, high: Int8Arithmetic.activationSteps)
  }

  /// `int8Step` in every lane of `v` (the same steps, as vectors).
  static func int8Steps(_ v: VExpr, _ q: Quantization) -> VExpr {
    let r = VExpr.add(.round(.div(v, .broadcast(.c(q.scale)))), .broadcast(.c(Float(q.zeroPoint))))
    let above = VExpr.max(.broadcast(.c(0)), r), high = VExpr.broadcast(.c(Int8Arithmetic.activationSteps))
    return .selectGreater(above, high, high, above)
  }

  /// `Int8Arithmetic.step`'s clamp: below `low` (or NaN) to `low`, above `high` to `high`.
  static func clampedStep(_ v: FExpr, low: Float, high: Float) -> FExpr {
    let above = FExpr.max(.c(low), v)
    return .select(.fgt(above, .c(high)), .c(high), above)
  }

  /// Prepares the weights of an int8 conv once per set of weights (`Int8Weights`): per filter, the scale
  /// (`Int8Arithmetic.weightScale`), the s8 quads in the columns' K order (channel quad, ky, kx; or with `alongRows`,
  /// channel, ky, quad of kx), the output scale and the correction.
  mutating func int8Weights(_ w: Placement, filters: Int, channels: Int, kernel k: Int, alongRows: Bool, transposed: Bool = false,
                            _ q: Quantization) -> Int8Weights {
    let ckk = channels * k * k, taps = k * k, channelQuads = (channels + 3) / 4, rowTaps = Self.wordTaps(k)
    let quads = alongRows ? channels * k * rowTaps : channelQuads * taps
    let p = Int8Weights(quads: prepared(filters * quads), scales: prepared(filters), corrections: prepared(filters))
    let zero = FExpr.c(Float(q.zeroPoint)), zeroQuad = FExpr.bytes(zero, zero, zero, zero)
    let code = loop("f", filters) { e, fi in
      let (m, scale, sum) = (e.fresh("wmax"), e.fresh("wscale"), e.fresh("correction"))
      func weight(_ k: IExpr) -> FExpr { .load(w.base, .c(w.offset) + fi * ckk + k) }
      /// The step of the weight at `k` of the filter's own order.
      func step(_ k: IExpr) -> FExpr {
        Self.clampedStep(.round(weight(k) / .local(scale)), low: -Float(q.weightSteps), high: Float(q.weightSteps))
      }
      /// The quad whose element i is the weight at `index(i)`, zero from `present` on; negated for the correction.
      func quad(_ index: (Int) -> IExpr, present: Int, negated: Bool) -> FExpr {
        let steps = (0..<4).map { i in i < present ? (negated ? .c(0) - step(index(i)) : step(index(i))) : FExpr.c(0) }
        return .bytes(steps[0], steps[1], steps[2], steps[3])
      }
      // Every quad, by its slot in the filter's row of quads and its elements' weights: a quad of channels at each
      // tap (slot cq x taps + tap; the last quad with the channels' remainder), or, along the kernel's rows, each
      // row's taps in quads (slot (c x k + ky) x rowTaps + t; the row's last quad with its remainder).
      func everyQuad(_ e: inout Emitter, _ body: (IExpr, (Int) -> IExpr, Int) -> Stmt) -> [Stmt] {
        if alongRows {
          return [e.loop("row", channels * k) { _, row in
            (0..<rowTaps).map { t in body(row * rowTaps + t, { row * k + (4 * t + $0) }, min(4, k - 4 * t)) }
          }]
        }
        var out = [e.loop("cq", channels / 4) { e, cq in
          [e.loop("tap", taps) { _, tap in [body(cq * taps + tap, { (cq * 4 + $0) * taps + tap }, 4)] }]
        }]
        if channels % 4 > 0 {
          let cq = channels / 4
          out.append(e.loop("tap", taps) { _, tap in [body(tap + cq * taps, { .c((cq * 4 + $0) * taps) + tap }, channels % 4)] })
        }
        return out
      }
      var out: [Stmt] = [.local(m, .c(0))]
      out.append(e.loop("k", ckk) { _, k in [.set(m, .max(.local(m), .max(weight(k), .c(0) - weight(k))))] })
      out.append(.local(scale, .select(.fgt(.local(m), .c(0)), .local(m) / .c(Float(q.weightSteps)), .c(1))))
      out.append(.store(.prepared, .c(p.scales) + fi, .c(q.scale) * .local(scale)))
      // Transposed, quad `slot` of every filter is one row (the GEMM's B along the filters).
      out += everyQuad(&e) { slot, index, present in
        .store(.prepared, .c(p.quads) + (transposed ? slot * filters + fi : fi * quads + slot), quad(index, present: present, negated: false))
      }
      out.append(.local(sum, .c(0)))
      out += everyQuad(&e) { _, index, present in .set(sum, .dotU8S8(.local(sum), zeroQuad, quad(index, present: present, negated: true), pairsFit16: q.pairsFitInt16)) }
      out.append(.store(.prepared, .c(p.corrections) + fi, .local(sum)))
      return out
    }
    prepare.append(.scalarLoops([code]))
    return p
  }
}
