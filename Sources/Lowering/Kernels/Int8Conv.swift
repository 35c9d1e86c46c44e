import GraphIR
import Passes

/// An int8 conv (`Conv2DAttrs.quantization`, inference only; the arithmetic is GraphIR's `Int8`): per image, the
/// column matrix (im2col, or the input itself for a 1x1 conv of stride 1 without padding) quantized to u8 steps
/// and packed in quads along K, then the register-blocked GEMM over the quads with the u8 x s8 dot product into
/// 32-bit sums, each filter's starting at its zero point's correction. The GEMM's epilogue scales the sums back
/// to f32 and applies the bias, folded batch norm, relu and tail as it stores the output. The weights' s8 quads,
/// scales and corrections are prepared once per set of weights.
extension Emitter {
  /// Where an int8 conv's prepared weights are, in the prepared buffer: the s8 quads ([filters x quads], K padded
  /// with zeros), each filter's output scale (input scale x weight scale) and the bits of its correction (the sum
  /// starts at -zero point x the sum of its weights, so the GEMM's u8 steps need no zero point subtracted).
  struct Int8Weights {
    let quads: Int, scales: Int, corrections: Int
  }

  mutating func int8Conv(_ n: Node, _ a: Conv2DAttrs, _ q: Quantization, relu: Bool, tail: ConvTail) {
    let xd = dims(n.args[0]), x = at(n.args[0]), o = a.output(xd)
    let s = ConvShape(n: xd[0], c: xd[1], h: xd[2], w: xd[3], f: a.filters, k: a.kernel, oh: o.h, ow: o.w, group: 1)
    let quads = (s.ckk + 3) / 4, weights = int8Weights(at("\(n.name).weight"), filters: s.f, ckk: s.ckk, q)
    convs.append(ConvChoice(node: n.name, algorithm: .im2col, tile: 2,
                            reason: target.int8Dot ? "int8: u8 x s8 dot product" : "int8: dot product by shifts and multiplies (no VNNI)"))
    let epilogue = ConvEpilogue(n: n, s: s, tmp: 0, table: 0, window: 1, pooled: 0, y: at(n.name),
                                bias: a.bias ? at("\(n.name).bias") : nil, fold: foldOperand(n, scaled: a.scaled))
    let inPlace = a.kernel == 1 && a.stride == 1 && a.padding == 0, macs = s.n * s.f * s.plane * s.ckk
    let columns = inPlace ? nil : tailScratch(s.ckk * s.plane), packed = tailScratch(quads * s.plane)
    let parts = parallelParts(units: s.f, macs: macs), copyParts = inPlace ? 1 : parallelParts(units: s.c, macs: macs)
    let packParts = parallelParts(units: quads, macs: macs)
    body.append(loop("g", s.n) { e, g in
      var out: [Stmt] = []
      // Row r of the f32 column matrix, element j, is at `column(r, j)`.
      let column: (IExpr, IExpr) -> FExpr
      if let columns {
        out += e.inParts(copyParts, of: "input channels") { e, part in
          e.im2colRows(a, s, x: x, g: g, col: columns, channels: (part * (s.c / copyParts), s.c / copyParts))
        }
        column = { r, j in .load(.arena, columns + r * s.plane + j) }
      } else {
        column = { r, j in .load(x.base, .c(x.offset) + g * (s.c * s.plane) + r * s.plane + j) }
      }
      out += e.inParts(packParts, of: "column quads") { e, part in
        e.packActivationQuads(column, rows: s.ckk, columns: s.plane, into: packed, q, part: (part, packParts))
      }
      let rows = s.f / parts
      out += e.inParts(parts, of: "output channels") { e, part in
        let f0 = part * rows
        var gemm = TiledGemm(m: rows, n: s.plane, k: quads, a: (.prepared, .c(weights.quads) + f0 * quads), aRow: quads, aCol: 1,
                             b: (.arena, packed), ldb: s.plane, c: (epilogue.y.base, .c(epilogue.y.offset) + (g * s.f + f0) * s.plane),
                             ldc: s.plane, accumulate: false, calls: s.n * parts)
        gemm.quads = true
        gemm.startsAt = { row in .load(.prepared, .c(weights.corrections) + f0 + row) }
        gemm.epilogue = { row, column, v in
          let fi = row + f0
          return epilogue.finished(.fromInt32(v) * .load(.prepared, .c(weights.scales) + fi), fi, relu: relu, tail: tail,
                                   at: (g * s.f + fi) * s.plane + column)
        }
        return e.tiledGemm(gemm)
      }
      return out
    })
  }

  /// The u8 steps of a `rows` x `columns` f32 matrix (element (r, j) at `column(r, j)`) packed in quads along the
  /// rows: word (qr, j) at `into` + qr * columns + j holds rows 4qr ..< 4qr + 4 of column j; rows past the last
  /// hold the zero point's step. Quad rows split evenly among `part.count` parts (the last takes the rest).
  mutating func packActivationQuads(_ column: @escaping (IExpr, IExpr) -> FExpr, rows: Int, columns: Int, into: IExpr, _ q: Quantization,
                                    part: (index: IExpr, count: Int)) -> [Stmt] {
    let full = rows / 4, per = full / part.count, rest = full - per * part.count
    func quad(_ e: inout Emitter, _ qr: IExpr, present: Int) -> Stmt {
      e.loop("j", columns) { _, j in
        let steps = (0..<4).map { i in i < present ? Self.int8Step(column(qr * 4 + i, j), q) : Self.int8Step(.c(0), q) }
        return [.store(.arena, into + qr * columns + j, .bytes(steps[0], steps[1], steps[2], steps[3]))]
      }
    }
    var out: [Stmt] = []
    if per > 0 { out.append(loop("qr", per) { e, qv in [quad(&e, part.index * per + qv, present: 4)] }) }
    var last: [Stmt] = []
    if rest > 0 { last.append(loop("qr", rest) { e, qv in [quad(&e, qv + per * part.count, present: 4)] }) }
    if rows % 4 > 0 { last.append(quad(&self, .c(full), present: rows % 4)) }
    if !last.isEmpty { out += part.count > 1 ? [.when(.ieq(part.index, .c(part.count - 1)), last)] : last }
    return out
  }

  /// `Int8.activation` of `v` in the kernel IR, in its steps' order.
  static func int8Step(_ v: FExpr, _ q: Quantization) -> FExpr {
    clampedStep(.round(v / .c(q.scale)) + .c(Float(q.zeroPoint)), low: 0, high: Int8.activationSteps)
  }

  /// `Int8.step`'s clamp: below `low` (or NaN) to `low`, above `high` to `high`.
  static func clampedStep(_ v: FExpr, low: Float, high: Float) -> FExpr {
    let above = FExpr.max(.c(low), v)
    return .select(.fgt(above, .c(high)), .c(high), above)
  }

  /// Prepares the weights of an int8 conv once per set of weights (`Int8Weights`): per filter, the scale
  /// (`Int8.weightScale`), the s8 quads, the output scale and the correction.
  mutating func int8Weights(_ w: Placement, filters: Int, ckk: Int, _ q: Quantization) -> Int8Weights {
    let quads = (ckk + 3) / 4
    let p = Int8Weights(quads: prepared(filters * quads), scales: prepared(filters), corrections: prepared(filters))
    let zero = FExpr.c(Float(q.zeroPoint)), zeroQuad = FExpr.bytes(zero, zero, zero, zero)
    let code = loop("f", filters) { e, fi in
      let (m, scale, sum) = (e.fresh("wmax"), e.fresh("wscale"), e.fresh("correction"))
      func weight(_ k: IExpr) -> FExpr { .load(w.base, .c(w.offset) + fi * ckk + k) }
      func step(_ k: IExpr, _ present: Bool) -> FExpr {
        present ? Self.clampedStep(.round(weight(k) / .local(scale)), low: -Int8.weightSteps, high: Int8.weightSteps) : .c(0)
      }
      func quad(_ qr: IExpr, present: Int, negated: Bool) -> FExpr {
        let steps = (0..<4).map { i in negated ? .c(0) - step(qr * 4 + i, i < present) : step(qr * 4 + i, i < present) }
        return .bytes(steps[0], steps[1], steps[2], steps[3])
      }
      // Every quad, the last with K's remainder (no loop when there is none).
      func everyQuad(_ body: (inout Emitter, IExpr, Int) -> [Stmt]) -> [Stmt] {
        var out = [e.loop("qr", ckk / 4) { e, qr in body(&e, qr, 4) }]
        if ckk % 4 > 0 { out += body(&e, .c(ckk / 4), ckk % 4) }
        return out
      }
      var out: [Stmt] = [.local(m, .c(0))]
      out.append(e.loop("k", ckk) { _, k in [.set(m, .max(.local(m), .max(weight(k), .c(0) - weight(k))))] })
      out.append(.local(scale, .select(.fgt(.local(m), .c(0)), .local(m) / .c(Int8.weightSteps), .c(1))))
      out.append(.store(.prepared, .c(p.scales) + fi, .c(q.scale) * .local(scale)))
      out += everyQuad { _, qr, present in [.store(.prepared, .c(p.quads) + fi * quads + qr, quad(qr, present: present, negated: false))] }
      out.append(.local(sum, .c(0)))
      out += everyQuad { _, qr, present in [.set(sum, .dotU8S8(.local(sum), zeroQuad, quad(qr, present: present, negated: true)))] }
      out.append(.store(.prepared, .c(p.corrections) + fi, .local(sum)))
      return out
    }
    prepare.append(.scalarLoops([code]))
    return p
  }
}
