import GraphIR

/// Convolution as im2col + GEMM per image, with the bias, relu and max-pool epilogue fused
/// while the conv plane is in cache; its gradients as two GEMMs (weights, columns) plus col2im.
extension Emitter {
  /// Copies image `img` of `x` into the column matrix [C*k*k, OH*OW] (zero where padded).
  mutating func im2col(_ a: Conv2DAttrs, x: Placement, xd: [Int], img: IExpr, col: Placement, oh: Int, ow: Int) -> Stmt {
    let (c, h, w, k) = (xd[1], xd[2], xd[3], a.kernel)
    return loop("c", c) { e, ci in [e.loop("ky", k) { e, ky in [e.loop("kx", k) { e, kx in [e.loop("oy", oh) { e, oy in [e.loop("ox", ow) { _, ox in
      let iy = oy * a.stride + ky + (-a.padding), ix = ox * a.stride + kx + (-a.padding)
      let dst = IExpr.c(col.offset) + ((ci * k + ky) * k + kx) * (oh * ow) + oy * ow + ox
      let src = IExpr.c(x.offset) + img * (c * h * w) + ci * (h * w) + iy * w + ix
      guard a.padding > 0 else { return [.store(col.base, dst, .load(x.base, src))] }
      let inside = Cond.and(.and(.ilt(.c(-1), iy), .ilt(iy, .c(h))), .and(.ilt(.c(-1), ix), .ilt(ix, .c(w))))
      return [.store(col.base, dst, .c(0)), .when(inside, [.store(col.base, dst, .load(x.base, src))])]
    }] }] }] }] }
  }

  mutating func convForward(_ n: Node, _ a: Conv2DAttrs, relu: Bool, pool: PoolAttrs?) {
    let x = at(n.args[0]), xd = dims(n.args[0])
    let w = at("\(n.name).weight")
    let bias = a.bias ? at("\(n.name).bias") : nil
    let (c, h, wd, k, f) = (xd[1], xd[2], xd[3], a.kernel, a.filters)
    let oh = (h + 2 * a.padding - k) / a.stride + 1, ow = (wd + 2 * a.padding - k) / a.stride + 1
    let plane = oh * ow, ckk = c * k * k
    let y = at(n.name)
    let s = plan.scratch[n.name]
    let colSize = needsIm2col(a) ? ckk * plane : 0
    let col = needsIm2col(a) ? Placement(base: .arena, offset: s!.offset, count: colSize) : x
    let tmp = pool != nil ? Placement(base: .arena, offset: s!.offset + colSize, count: f * plane) : nil
    body.append(loop("img", xd[0]) { e, img in
      var out: [Stmt] = []
      if needsIm2col(a) { out.append(e.im2col(a, x: x, xd: xd, img: img, col: col, oh: oh, ow: ow)) }
      let colStart = needsIm2col(a) ? IExpr.c(col.offset) : .c(x.offset) + img * (c * h * wd)
      let dst = tmp.map { IExpr.c($0.offset) } ?? .c(y.offset) + img * (f * plane)
      out.append(.gemm(Gemm(transA: false, transB: false, m: f, n: plane, k: ckk, a: (.params, .c(w.offset)), lda: ckk,
                            b: (col.base, colStart), ldb: plane, beta: 0, c: (.arena, dst), ldc: plane)))
      func biased(_ v: FExpr, _ fi: IExpr) -> FExpr { bias.map { v + .load(.params, .c($0.offset) + fi) } ?? v }
      if let p = pool {
        // Pool the biased conv plane; relu(max) == max(relu) and the relu mask is "pooled > 0".
        let py = (oh - p.size) / p.stride + 1, px = (ow - p.size) / p.stride + 1
        let argmax = e.at("\(n.name).argmax")
        out.append(e.loop("f", f) { e, fi in [e.loop("py", py) { e, yy in [e.loop("px", px) { e, xx in
          let best = e.fresh("best"), bi = e.fresh("bi")
          let first = yy * (p.stride * ow) + xx * p.stride
          var inner: [Stmt] = [.local(best, biased(.load(.arena, .c(tmp!.offset) + fi * plane + first), fi)), .local(bi, .ofInt(first))]
          inner.append(e.loop("ky", p.size) { e, ky in [e.loop("kx", p.size) { _, kx in
            let idx = first + ky * ow + kx
            let v = biased(.load(.arena, .c(tmp!.offset) + fi * plane + idx), fi)
            return [.set(bi, .select(.fgt(v, .local(best)), .ofInt(idx), .local(bi))),
                    .set(best, .select(.fgt(v, .local(best)), v, .local(best)))]
          }] })
          let o = img * (f * py * px) + fi * (py * px) + yy * px + xx
          inner.append(.store(y.base, .c(y.offset) + o, .select(.fgt(.local(best), .c(0)), .local(best), .c(0))))
          inner.append(.store(argmax.base, .c(argmax.offset) + o, .local(bi)))
          return inner
        }] }] })
      } else if bias != nil || relu {
        out.append(e.loop("f", f) { e, fi in [e.loop("i", plane) { _, i in
          let idx = IExpr.c(y.offset) + img * (f * plane) + fi * plane + i
          let v = biased(.load(.arena, idx), fi)
          return [.store(.arena, idx, relu ? .select(.fgt(v, .c(0)), v, .c(0)) : v)]
        }] })
      }
      return out
    })
  }

  mutating func convGradWeight(_ n: Node, _ a: Conv2DAttrs) {
    let dy = at(n.args[0]), dyd = dims(n.args[0]), x = at(n.args[1]), xd = dims(n.args[1])
    let dw = at(n.name)
    let (c, k, f) = (xd[1], a.kernel, a.filters)
    let plane = dyd[2] * dyd[3], ckk = c * k * k
    body.append(zero(dw))
    let col = needsIm2col(a) ? plan.scratch[n.name]! : x
    body.append(loop("img", xd[0]) { e, img in
      var out: [Stmt] = []
      if needsIm2col(a) { out.append(e.im2col(a, x: x, xd: xd, img: img, col: col, oh: dyd[2], ow: dyd[3])) }
      let colStart = needsIm2col(a) ? IExpr.c(col.offset) : .c(x.offset) + img * (c * xd[2] * xd[3])
      out.append(.gemm(Gemm(transA: false, transB: true, m: f, n: ckk, k: plane, a: (dy.base, .c(dy.offset) + img * (f * plane)), lda: plane,
                            b: (col.base, colStart), ldb: plane, beta: 1, c: (dw.base, .c(dw.offset)), ldc: ckk)))
      return out
    })
  }

  mutating func convGradInput(_ n: Node, _ a: Conv2DAttrs) {
    let dy = at(n.args[0]), dyd = dims(n.args[0]), w = at(n.args[1]), xd = dims(n.args[2])
    let dx = at(n.name)
    let (c, h, wd, k, f) = (xd[1], xd[2], xd[3], a.kernel, a.filters)
    let (oh, ow) = (dyd[2], dyd[3])
    let plane = oh * ow, ckk = c * k * k
    let dcol = plan.scratch[n.name]!
    body.append(zero(dx))
    body.append(loop("img", xd[0]) { e, img in
      [.gemm(Gemm(transA: true, transB: false, m: ckk, n: plane, k: f, a: (w.base, .c(w.offset)), lda: ckk,
                  b: (dy.base, .c(dy.offset) + img * (f * plane)), ldb: plane, beta: 0, c: (.arena, .c(dcol.offset)), ldc: plane)),
       e.loop("c", c) { e, ci in [e.loop("ky", k) { e, ky in [e.loop("kx", k) { e, kx in [e.loop("oy", oh) { e, oy in [e.loop("ox", ow) { _, ox in
         let iy = oy * a.stride + ky + (-a.padding), ix = ox * a.stride + kx + (-a.padding)
         let src = IExpr.c(dcol.offset) + ((ci * k + ky) * k + kx) * plane + oy * ow + ox
         let dst = IExpr.c(dx.offset) + img * (c * h * wd) + ci * (h * wd) + iy * wd + ix
         let acc = Stmt.accumulate(dx.base, dst, .load(.arena, src))
         guard a.padding > 0 else { return [acc] }
         return [.when(.and(.and(.ilt(.c(-1), iy), .ilt(iy, .c(h))), .and(.ilt(.c(-1), ix), .ilt(ix, .c(wd)))), [acc])]
       }] }] }] }] }]
    })
  }

  mutating func convGradBias(_ n: Node) {
    let dy = at(n.args[0]), d = dims(n.args[0])
    let db = at(n.name)
    let plane = d[2] * d[3]
    body.append(loop("f", d[1]) { e, fi in
      let acc = e.fresh("acc")
      return [.local(acc, .c(0)),
              e.loop("img", d[0]) { e, img in [e.loop("i", plane) { _, i in
                [.set(acc, .local(acc) + .load(dy.base, .c(dy.offset) + img * (d[1] * plane) + fi * plane + i))]
              }] },
              .store(db.base, .c(db.offset) + fi, .local(acc))]
    })
  }
}
