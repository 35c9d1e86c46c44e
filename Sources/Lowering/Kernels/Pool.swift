import GraphIR
import Passes

/// Pooling windows, their gradients, and the fused relu+maxpool gradient that reads the saved argmax.
extension Emitter {
  /// The window of output (yy, xx) in plane q: (first element index, its row stride).
  private func window(_ p: PoolAttrs, q: IExpr, h: Int, w: Int, yy: IExpr, xx: IExpr) -> IExpr {
    q * (h * w) + yy * (p.stride * w) + xx * p.stride
  }

  mutating func pool(_ n: Node, _ p: PoolAttrs, max isMax: Bool) {
    let x = at(n.args[0]), xd = dims(n.args[0]), y = at(n.name), yd = dims(n.name)
    let (h, w, oh, ow) = (xd[2], xd[3], yd[2], yd[3])
    body += planeLoop("q", xd[0] * xd[1], work: yd.reduce(1, *) * p.size * p.size) { e, q in [e.loop("py", oh) { e, yy in [e.loop("px", ow) { e, xx in
      let acc = e.fresh("acc")
      let start = IExpr.c(x.offset) + e.window(p, q: q, h: h, w: w, yy: yy, xx: xx)
      let initial: FExpr = isMax ? .load(x.base, start) : .c(0)
      return [.local(acc, initial)] + e.small("ky", p.size) { e, ky in e.small("kx", p.size) { _, kx in
                let v = FExpr.load(x.base, start + ky * w + kx)
                return [.set(acc, isMax ? .max(.local(acc), v) : .local(acc) + v)]
              } } + [
              .store(y.base, .c(y.offset) + q * (oh * ow) + yy * ow + xx,
                     isMax ? .local(acc) : .local(acc) * .c(1 / Float(p.size * p.size)))]
    }] }] }
  }

  mutating func maxPoolGrad(_ n: Node, _ p: PoolAttrs) {
    let dy = at(n.args[0]), dyd = dims(n.args[0]), x = at(n.args[1]), xd = dims(n.args[1]), dx = at(n.name)
    let (h, w, oh, ow) = (xd[2], xd[3], dyd[2], dyd[3])
    body += gradientPlanes(dx, planes: xd[0] * xd[1], plane: h * w) { e, q in [e.loop("py", oh) { e, yy in [e.loop("px", ow) { e, xx in
      let best = e.fresh("best"), bi = e.fresh("bi")
      let start = e.window(p, q: q, h: h, w: w, yy: yy, xx: xx)
      return [.local(best, .load(x.base, .c(x.offset) + start)), .local(bi, .ofInt(start))] + e.small("ky", p.size) { e, ky in e.small("kx", p.size) { _, kx in
                // Strictly greater: ties go to the first maximum, as in the reference kernel.
                let idx = start + ky * w + kx
                let v = FExpr.load(x.base, .c(x.offset) + idx)
                return [.set(bi, .select(.fgt(v, .local(best)), .ofInt(idx), .local(bi))),
                        .set(best, .select(.fgt(v, .local(best)), v, .local(best)))]
              } } + [
              .accumulate(dx.base, .c(dx.offset) + .ofFloat(.local(bi)), .load(dy.base, .c(dy.offset) + q * (oh * ow) + yy * ow + xx))]
    }] }] }
  }

  mutating func avgPoolGrad(_ n: Node, _ p: PoolAttrs) {
    let dy = at(n.args[0]), dyd = dims(n.args[0]), xd = dims(n.args[1]), dx = at(n.name)
    let (h, w, oh, ow) = (xd[2], xd[3], dyd[2], dyd[3])
    let scale = 1 / Float(p.size * p.size)
    body += gradientPlanes(dx, planes: xd[0] * xd[1], plane: h * w) { e, q in [e.loop("py", oh) { e, yy in [e.loop("px", ow) { e, xx in
      let start = IExpr.c(dx.offset) + e.window(p, q: q, h: h, w: w, yy: yy, xx: xx)
      let g = FExpr.load(dy.base, .c(dy.offset) + q * (oh * ow) + yy * ow + xx) * .c(scale)
      return [e.loop("ky", p.size) { e, ky in [e.loop("kx", p.size) { _, kx in [.accumulate(dx.base, start + ky * w + kx, g)] }] }]
    }] }] }
  }

  /// The taps of the window at output (yy, xx) of a padded or ceil-mode pool: `tap(index in the plane, inside)`
  /// for each of its size x size positions, where `inside` holds for the positions in the input; `padded`
  /// holds for those inside the padded extent (what an average with `countIncludePad` divides by).
  private mutating func paddedTaps(_ p: PoolAttrs, h: Int, w: Int, yy: IExpr, xx: IExpr,
                                   _ tap: (inout Emitter, IExpr, _ inside: Cond, _ padded: Cond) -> [Stmt]) -> [Stmt] {
    let top = yy * p.stride + .c(-p.padding), left = xx * p.stride + .c(-p.padding)
    return small("ky", p.size) { e, ky in e.small("kx", p.size) { e, kx in
      let iy = top + ky, ix = left + kx
      let inside = Cond.and(.and(.ilt(.c(-1), iy), .ilt(iy, .c(h))), .and(.ilt(.c(-1), ix), .ilt(ix, .c(w))))
      let padded = Cond.and(.ilt(iy, .c(h + p.padding)), .ilt(ix, .c(w + p.padding)))
      return tap(&e, iy * w + ix, inside, padded)
    } }
  }

  /// A pool whose windows may reach past the input. Output rows and columns are taken in runs whose taps inside
  /// the input (and inside the padded extent, which an average with `countIncludePad` divides by) are the same,
  /// so each run's loop reads only its taps, with no test per tap (padding never wins a max and counts in an
  /// average only with `countIncludePad`). The taps combine in (ky, kx) order from -inf or 0, as in the
  /// reference. Testing each tap took ResNet's stem pool 2.6 times ONNX Runtime's time.
  /// Planes split over the pool where the parts divide the batch (each part its images), else each plane's rows, so
  /// that at batch 1 each core pools the rows its core's conv wrote (ResNet's stem splits its bands of rows).
  mutating func paddedPool(_ n: Node, _ p: PoolAttrs, max isMax: Bool) {
    let x = at(n.args[0]), xd = dims(n.args[0]), y = at(n.name), yd = dims(n.name)
    let (h, w, oh, ow) = (xd[2], xd[3], yd[2], yd[3]), work = yd.reduce(1, *) * p.size * p.size
    let rows = Self.poolRuns(p, outputs: oh, size: h), columns = Self.poolRuns(p, outputs: ow, size: w)
    /// Output row yy of plane q, of the run of rows `r`.
    func row(_ e: inout Emitter, _ q: IExpr, _ yy: IExpr, _ r: (range: Range<Int>, inside: [Int], padded: Int)) -> [Stmt] {
      columns.map { c in e.loop("px", c.range.count) { _, u in
        let xx = u + c.range.lowerBound
        let top = yy * p.stride + .c(-p.padding), left = xx * p.stride + .c(-p.padding)
        var acc = FExpr.c(isMax ? -Float.infinity : 0)
        for ky in r.inside { for kx in c.inside {
          let v = FExpr.load(x.base, .c(x.offset) + q * (h * w) + (top + ky) * w + left + kx)
          acc = isMax ? .max(acc, v) : acc + v
        } }
        let count = p.countIncludePad ? r.padded * c.padded : r.inside.count * c.inside.count
        return [.store(y.base, .c(y.offset) + q * (oh * ow) + yy * ow + xx, isMax ? acc : acc / .c(Float(count)))]
      } }
    }
    let parts = parallelParts(macs: work)
    guard parts > 1, xd[0] % parts != 0 else {
      body += planeLoop("q", xd[0] * xd[1], work: work) { e, q in rows.map { r in
        e.loop("py", r.range.count) { e, v in row(&e, q, v + r.range.lowerBound, r) }
      } }
      return
    }
    body += inParts(parts, of: "rows") { e, part in
      [e.loop("q", xd[0] * xd[1]) { e, q in e.rowsInParts(rows.map(\.range), parts: parts, part: part) { e, yy, run in row(&e, q, yy, rows[run]) } }]
    }
  }

  /// A max or average pool on channels-last values: vectors along the channels, each run of output rows and
  /// columns reading only its taps inside the input (`poolRuns`), the rows split over the pool at inference.
  /// An average divides as `pool` and `paddedPool` do: by the window's size when plain, else by its count.
  mutating func poolChannelsLast(_ n: Node, _ p: PoolAttrs, max isMax: Bool) {
    let x = at(n.args[0]), xd = dims(n.args[0]), y = at(n.name), yd = dims(n.name)
    let (c, h, w, oh, ow) = (xd[1], xd[2], xd[3], yd[2], yd[3])
    let rows = Self.poolRuns(p, outputs: oh, size: h), columns = Self.poolRuns(p, outputs: ow, size: w)
    let parts = parallelParts(macs: yd.reduce(1, *) * p.size * p.size)
    let split = inParts(parts, of: "rows") { e, part in [e.loop("b", xd[0]) { e, b in
      e.rowsInParts(rows.map(\.range), parts: parts, part: part) { e, oy, run in
        let r = rows[run]
        return columns.map { col in e.loop("px", col.range.count) { e, u in
          let ox = u + col.range.lowerBound, top = oy * p.stride + .c(-p.padding), left = ox * p.stride + .c(-p.padding)
          return e.vectorRuns(c) { _, c0, lanes in
            var acc = VExpr.broadcast(.c(isMax ? -Float.infinity : 0))
            for ky in r.inside { for kx in col.inside {
              let v = VExpr.load(x.base, .c(x.offset) + ((b * h + top + ky) * w + left + kx) * c + c0, lanes: lanes)
              acc = isMax ? .max(acc, v) : .add(acc, v)
            } }
            let count = p.isPlain ? p.size * p.size : p.countIncludePad ? r.padded * col.padded : r.inside.count * col.inside.count
            let value: VExpr = isMax ? acc : p.isPlain ? .mul(acc, .broadcast(.c(1 / Float(count)))) : .div(acc, .broadcast(.c(Float(count))))
            return [.vstore(y.base, .c(y.offset) + ((b * oh + oy) * ow + ox) * c + c0, value, lanes: lanes)]
          }
        } }
      }
    }] }
    body += split
  }

  /// Runs of consecutive pool outputs along one axis of `size` inputs with the same taps inside the input and the
  /// same count inside the padded extent: (outputs, inside taps, padded count), in order.
  static func poolRuns(_ p: PoolAttrs, outputs: Int, size: Int) -> [(range: Range<Int>, inside: [Int], padded: Int)] {
    struct Taps: Equatable { var inside: [Int], padded: Int }
    return runs(outputs) { o in
      let start = o * p.stride - p.padding
      return Taps(inside: (0..<p.size).filter { (0..<size).contains(start + $0) }, padded: (0..<p.size).filter { start + $0 < size + p.padding }.count)
    }.map { ($0.range, $0.key.inside, $0.key.padded) }
  }

  /// The gradient of a padded or ceil-mode maxpool: dy to the first maximum among the window's input elements.
  mutating func paddedMaxPoolGrad(_ n: Node, _ p: PoolAttrs) {
    let dy = at(n.args[0]), dyd = dims(n.args[0]), x = at(n.args[1]), xd = dims(n.args[1]), dx = at(n.name)
    let (h, w, oh, ow) = (xd[2], xd[3], dyd[2], dyd[3])
    body += gradientPlanes(dx, planes: xd[0] * xd[1], plane: h * w) { e, q in [e.loop("py", oh) { e, yy in [e.loop("px", ow) { e, xx in
      let best = e.fresh("best"), bi = e.fresh("bi")
      let plane = q * (h * w)
      let taps = e.paddedTaps(p, h: h, w: w, yy: yy, xx: xx) { _, i, inside, _ in
        let v = FExpr.load(x.base, .c(x.offset) + plane + i)
        // The first input element starts the search (bi < 0); after it, strictly greater wins, as in the reference.
        let first = Cond.and(inside, .fgt(.c(0), .local(bi))), greater = Cond.and(inside, .fgt(v, .local(best)))
        return [.when(first, [.set(bi, .ofInt(i)), .set(best, v)]), .when(greater, [.set(bi, .ofInt(i)), .set(best, v)])]
      }
      return [.local(best, .c(0)), .local(bi, .c(-1))] + taps + [
        .accumulate(dx.base, .c(dx.offset) + plane + .ofFloat(.local(bi)), .load(dy.base, .c(dy.offset) + q * (oh * ow) + yy * ow + xx))]
    }] }] }
  }

  /// The gradient of a padded or ceil-mode avgpool: dy over the window's divisor, to each input element.
  mutating func paddedAvgPoolGrad(_ n: Node, _ p: PoolAttrs) {
    let dy = at(n.args[0]), dyd = dims(n.args[0]), xd = dims(n.args[1]), dx = at(n.name)
    let (h, w, oh, ow) = (xd[2], xd[3], dyd[2], dyd[3])
    body += gradientPlanes(dx, planes: xd[0] * xd[1], plane: h * w) { e, q in [e.loop("py", oh) { e, yy in [e.loop("px", ow) { e, xx in
      let count = e.fresh("count"), g = e.fresh("g")
      let counting = e.paddedTaps(p, h: h, w: w, yy: yy, xx: xx) { _, _, inside, padded in
        [.when(p.countIncludePad ? padded : inside, [.set(count, .local(count) + .c(1))])]
      }
      let spreading = e.paddedTaps(p, h: h, w: w, yy: yy, xx: xx) { _, i, inside, _ in
        [.when(inside, [.accumulate(dx.base, .c(dx.offset) + q * (h * w) + i, .local(g))])]
      }
      let dyv = FExpr.load(dy.base, .c(dy.offset) + q * (oh * ow) + yy * ow + xx)
      return [.local(count, .c(0))] + counting + [.local(g, dyv * (.c(1) / .local(count)))] + spreading
    }] }] }
  }

  mutating func reluMaxPoolGrad(_ n: Node, _ a: UnpoolAttrs) {
    let dy = at(n.args[0]), d = dims(n.args[0]), y = at(n.args[1]), am = at(n.args[2]), dx = at(n.name)
    let plane = a.height * a.width, pooled = d[2] * d[3]
    body += gradientPlanes(dx, planes: d[0] * d[1], plane: plane) { e, q in [e.loop("i", pooled) { _, i in
      let o = q * pooled + i
      return [.when(.fgt(.load(y.base, .c(y.offset) + o), .c(0)), [
        .accumulate(dx.base, .c(dx.offset) + q * plane + .ofFloat(.load(am.base, .c(am.offset) + o)), .load(dy.base, .c(dy.offset) + o)),
      ])]
    }] }
  }

  /// A pooling gradient's planes: each zeroed, then `scatter(q)` adds into it (every window of plane q lies in
  /// it), plane by plane so the plane is still in cache when the scatter comes; the planes split over the pool
  /// when the pass is large.
  mutating func gradientPlanes(_ dx: Placement, planes: Int, plane: Int, _ scatter: @escaping (inout Emitter, IExpr) -> [Stmt]) -> [Stmt] {
    planeLoop("q", planes, work: planes * plane * Self.elementwiseWeight) { e, q in
      [e.elementwise(plane) { i in .store(dx.base, .c(dx.offset) + q * plane + i, .c(0)) }] + scatter(&e, q)
    }
  }
}

// MARK: The pooling ops' lowerings

extension MaxPoolOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let p = attrs.clamped(input: e.dims(n.args[0]))
    if e.sharesChannelsLast(n) { return e.poolChannelsLast(n, p, max: true) }
    if p.isPlain { e.pool(n, p, max: true) } else { e.paddedPool(n, p, max: true) }
  }
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule { .shared([0], gains: false) }
}

extension AvgPoolOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let p = attrs.clamped(input: e.dims(n.args[0]))
    if e.sharesChannelsLast(n) { return e.poolChannelsLast(n, p, max: false) }
    if p.isPlain { e.pool(n, p, max: false) } else { e.paddedPool(n, p, max: false) }
  }
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule { .shared([0], gains: false) }
}

extension MaxPoolGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let p = attrs.clamped(input: e.dims(n.args[1]))
    if p.isPlain { e.maxPoolGrad(n, p) } else { e.paddedMaxPoolGrad(n, p) }
  }
}

extension AvgPoolGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let p = attrs.clamped(input: e.dims(n.args[1]))
    if p.isPlain { e.avgPoolGrad(n, p) } else { e.paddedAvgPoolGrad(n, p) }
  }
}

extension ReLUMaxPoolGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    e.reluMaxPoolGrad(n, UnpoolAttrs(pool: attrs.pool.clamped(attrs.height, attrs.width), height: attrs.height, width: attrs.width))
  }
}

extension GlobalAvgPoolOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.channelsLast.contains(n.args[0]) ? e.globalAvgPoolChannelsLast(n) : e.globalAvgPool(n) }
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule { .reduction }
  /// Each part's accumulator lanes, summed in order.
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { target.lanes * target.parallelParts }
}

extension GlobalAvgPoolGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.globalAvgPoolGrad(n) }
}

extension Emitter {
  /// The mean of each plane: a vector accumulator over the plane (a masked load for its tail), its lanes then
  /// summed in order. An in-order scalar sum waits one add latency per element: EfficientNet-B0's squeeze
  /// layers at batch 1 took 0.8 ms of its 14 that way.
  mutating func globalAvgPool(_ n: Node) {
    let x = at(n.args[0]), xd = dims(n.args[0]), y = at(n.name), scratch = plan.scratch[n.name]!.offset
    let hw = xd[2] * xd[3], planes = xd[0] * xd[1]
    let parts = parallelParts(units: planes, macs: xd.reduce(1, *) * Self.elementwiseWeight), per = planes / parts
    body += inParts(parts, of: "planes") { e, part in
      [e.loop("q", per) { e, qv in
        let q = qv + part * per, acc = e.fresh("acc")
        var out: [Stmt] = [.vlocal(acc, .zero)]
        out += e.vectorRuns(hw) { _, first, lanes in [.vset(acc, .add(.local(acc), .load(x.base, .c(x.offset) + q * hw + first, lanes: lanes)))] }
        let (summing, sum) = e.sumLanes(acc, scratch: scratch, part: part)
        return out + summing + [.store(y.base, .c(y.offset) + q, sum / .c(Float(hw)))]
      }]
    }
  }

  /// The mean of each channel of a channels-last input: one vector accumulator per channel vector, down the pixels.
  mutating func globalAvgPoolChannelsLast(_ n: Node) {
    let x = at(n.args[0]), xd = dims(n.args[0]), y = at(n.name)
    let (images, c, hw) = (xd[0], xd[1], xd[2] * xd[3])
    let width = lanes, vectors = c / width, rest = c % width
    let mean = { (e: inout Emitter, b: IExpr, c0: IExpr, lanes: Int) -> [Stmt] in
      let acc = e.fresh("acc")
      return [.vlocal(acc, .zero),
              e.loop("p", hw) { _, p in [.vset(acc, .add(.local(acc), .load(x.base, .c(x.offset) + (b * hw + p) * c + c0, lanes: lanes)))] },
              .vstore(y.base, .c(y.offset) + b * c + c0, .div(.local(acc), .broadcast(.c(Float(hw)))), lanes: lanes)]
    }
    let parts = parallelParts(units: vectors, macs: xd.reduce(1, *) * Self.elementwiseWeight), per = vectors / max(parts, 1)
    if vectors > 0 {
      let split = inParts(parts, of: "channel vectors") { e, part in [e.loop("b", images) { e, b in [e.loop("cv", per) { e, cv in
        mean(&e, b, (cv + part * per) * width, width)
      }] }] }
      body += split
    }
    if rest > 0 {
      let masked = loop("b", images) { e, b in mean(&e, b, .c(vectors * width), rest) }
      body.append(masked)
    }
  }

  /// dy / (H W) spread over each plane.
  mutating func globalAvgPoolGrad(_ n: Node) {
    let dy = at(n.args[0]), xd = dims(n.args[1]), dx = at(n.name)
    let hw = xd[2] * xd[3]
    body.append(loop("q", xd[0] * xd[1]) { e, q in
      [e.loop("i", hw) { _, i in [.store(dx.base, .c(dx.offset) + q * hw + i, .load(dy.base, .c(dy.offset) + q) / .c(Float(hw)))] }]
    })
  }
}
