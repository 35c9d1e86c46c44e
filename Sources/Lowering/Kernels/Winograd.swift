import GraphIR
import Passes

/// Winograd F(2x2, 3x3) convolution for stride-1 3x3 convs and both of their gradients, in the kernel IR.
///
/// A 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A for the 4x4 input tile d over it and the 3x3 kernel g:
/// 16 multiplies per tile and channel pair where direct convolution does 36. Over a group of images the
/// products become 16 GEMMs (one per position xi of the 4x4 transformed tile) of [filters x channels] by
/// [channels x tiles], register-blocked like every other GEMM, between an input transform and an output
/// transform that keeps the bias, relu and max-pool epilogue fused. The gradients reuse the same three
/// matrices: the input gradient is the forward algorithm on dy with the flipped, transposed kernel, and the
/// weight gradient is the exact derivative of the forward formula, G^T [sum over tiles (A dy A^T) . (B^T d B)] G,
/// with the sum over tiles one GEMM per xi. Every sum is in a fixed order, so results are the same run after
/// run and whatever the thread count; the fp32 error is about twice direct convolution's (tested).
enum Winograd {
  /// B^T: the 4x4 input tile to its transform (interpolation points 0, 1, -1 and infinity).
  static let inputTransform: [[Float]] = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
  /// G: the 3x3 kernel to its 4x4 transform.
  static let kernelTransform: [[Float]] = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]
  /// A^T: the 4x4 product back to the 2x2 output tile.
  static let outputTransform: [[Float]] = [[1, 1, 1, 0], [0, 1, -1, -1]]
  /// Positions of the transformed tile: one GEMM each.
  static let positions = 16

  static func transposed(_ m: [[Float]]) -> [[Float]] { m[0].indices.map { j in m.map { $0[j] } } }
}

/// The geometry of one Winograd convolution: `images` images of `cin` channels h x w in, `cout` channels
/// oh x ow out (oh = h + 2 * padding - 2), in 2x2 tiles.
struct WinogradShape {
  var images: Int, cin: Int, cout: Int, h: Int, w: Int, padding: Int
  var oh: Int { h + 2 * padding - 2 }
  var ow: Int { w + 2 * padding - 2 }
  var tilesY: Int { (oh + 1) / 2 }
  var tilesX: Int { (ow + 1) / 2 }
  var tilesPerImage: Int { tilesY * tilesX }
  /// Columns of the GEMMs: every tile of the group.
  var tiles: Int { images * tilesPerImage }
  /// The zero-padded input plane every 4x4 tile reads without bounds checks.
  var paddedH: Int { 2 * tilesY + 2 }
  var paddedW: Int { 2 * tilesX + 2 }
  /// Whether the input needs a padded copy (it does unless it already is that plane).
  var copiesInput: Bool { padding > 0 || paddedH != h || paddedW != w }

  var kernelFloats: Int { Winograd.positions * cout * cin }
  var paddedFloats: Int { copiesInput ? images * cin * paddedH * paddedW : 0 }
  var transformedFloats: Int { Winograd.positions * cin * tiles }
  var productFloats: Int { Winograd.positions * cout * tiles }
  /// Scratch of a forward pass (or an input gradient): transformed kernel, padded input, transformed input, products.
  var forwardFloats: Int { kernelFloats + paddedFloats + transformedFloats + productFloats }
}

// MARK: Choosing the algorithm

/// Which algorithm a conv pass got, and why (printed by `cnnc compile` and `cnnc bench --profile`).
public struct ConvChoice: Equatable, Sendable {
  public var node: String
  public var algorithm: ConvAlgorithm
  public var reason: String
}

/// The cost rule `--conv auto` applies to each conv pass, a model in core cycles per image.
///
/// im2col + GEMM does 9 multiply-adds per output and channel pair plus one copied float per column entry;
/// Winograd does 16 per tile (4 outputs) and channel pair plus the transforms: 16 floats per tile of each
/// input channel and of each output channel, written and read once more. The GEMMs run at
/// `gemmShareOfPeak` of the FMA peak (2 pipes x lanes multiply-adds a cycle; measured 55-70% on Zen 3 and
/// Zen 4), a transformed float costs `cyclesPerTransformedFloat` (its loads, adds and store, scalar).
enum ConvCost {
  static let gemmShareOfPeak = 0.6
  static let cyclesPerTransformedFloat = 1.0
  /// Below this many channels on either side a Winograd GEMM's K (or its M) is too short to amortise the
  /// accumulators' loads and stores, and the transforms dominate: the first conv of an image network.
  static let minimumChannels = 8

  static func cycles(macs: Double, copied: Double, target: Target) -> Double {
    macs / (2 * Double(target.lanes) * gemmShareOfPeak) + copied * cyclesPerTransformedFloat
  }

  /// The algorithm for a 3x3-or-other conv pass of `cin` channels to `cout` over an oh x ow output, with
  /// `eligible` nil when Winograd applies (else why it does not).
  static func choose(cin: Int, cout: Int, oh: Int, ow: Int, eligible: String?, target: Target) -> (ConvAlgorithm, String) {
    if let eligible { return (.im2col, eligible) }
    let tiles = Double(((oh + 1) / 2) * ((ow + 1) / 2)), plane = Double(oh * ow)
    let (c, f) = (Double(cin), Double(cout))
    let direct = cycles(macs: 9 * c * f * plane, copied: 9 * c * plane, target: target)
    let winograd = cycles(macs: 16 * c * f * tiles, copied: 16 * (c + f) * tiles, target: target)
    let model = "model \(Int((winograd / 1000).rounded()))k vs \(Int((direct / 1000).rounded()))k cycles per image for im2col"
    switch target.convAlgorithm {
    case .im2col: return (.im2col, "--conv im2col")
    case .winograd: return (.winograd, "--conv winograd; \(model)")
    case .auto:
      if min(cin, cout) < minimumChannels { return (.im2col, "\(min(cin, cout)) channels: too few for Winograd's GEMMs") }
      return winograd < direct ? (.winograd, model) : (.im2col, model)
    }
  }

  /// The choice for a forward conv (or a weight gradient, whose transforms are the same) of attributes `a` on input `x`.
  static func forward(_ a: Conv2DAttrs, x: [Int], target: Target) -> (ConvAlgorithm, String) {
    let o = a.output(x)
    let eligible: String? = a.kernel != 3 ? "kernel \(a.kernel)x\(a.kernel): Winograd F(2x2, 3x3) is for 3x3"
      : a.stride != 1 ? "stride \(a.stride): Winograd is for stride 1" : nil
    return choose(cin: x[1], cout: a.filters, oh: o.h, ow: o.w, eligible: eligible, target: target)
  }

  /// The choice for an input gradient: the forward algorithm on dy with padding 2 - padding.
  static func inputGradient(_ a: Conv2DAttrs, x: [Int], target: Target) -> (ConvAlgorithm, String) {
    if a.kernel == 3, a.stride == 1, a.padding > 2 {
      return (.im2col, "padding \(a.padding): the input gradient as a conv needs padding 2 - \(a.padding)")
    }
    return forward(a, x: x, target: target)
  }
}


extension WinogradShape {
  /// The images per group of a Winograd pass: the largest divisor of the batch whose scratch per image
  /// fits the same cache budget as an im2col group (`Target.convImageGroup`).
  static func group(batch: Int, bytesPerImage: Int, target: Target) -> Int {
    let most = target.convImageGroup(columnBytesPerImage: bytesPerImage)
    return (1...max(1, min(batch, most))).last { batch % $0 == 0 }!
  }

  /// A forward pass's geometry for a conv on input dims `xd` (its scratch includes the conv plane a
  /// pooling epilogue other than 2x2 reads).
  static func forward(_ a: Conv2DAttrs, x xd: [Int], target: Target) -> WinogradShape {
    var s = WinogradShape(images: 1, cin: xd[1], cout: a.filters, h: xd[2], w: xd[3], padding: a.padding)
    s.images = group(batch: xd[0], bytesPerImage: (s.forwardFloats - s.kernelFloats + s.planeFloats) * 4, target: target)
    return s
  }

  /// The input gradient's geometry: a conv of dy (the forward's cout channels) to dx with padding 2 - padding.
  static func inputGradient(_ a: Conv2DAttrs, x xd: [Int], target: Target) -> WinogradShape {
    let o = a.output(xd)
    var s = WinogradShape(images: 1, cin: a.filters, cout: xd[1], h: o.h, w: o.w, padding: 2 - a.padding)
    s.images = group(batch: xd[0], bytesPerImage: (s.forwardFloats - s.kernelFloats) * 4, target: target)
    return s
  }

  /// The conv plane of a group in the im2col result's layout [cout x images * oh * ow].
  var planeFloats: Int { cout * images * oh * ow }
}

/// The weight gradient's geometry: the forward's input tiles, plus a padded copy of dy where the output
/// size is odd (its last tiles cover one row or column).
struct WeightGradientLayout {
  var s: WinogradShape
  var paddedDy: Int { s.oh % 2 == 0 && s.ow % 2 == 0 ? 0 : s.images * s.cout * (2 * s.tilesY) * (2 * s.tilesX) }
  var dyTransformFloats: Int { Winograd.positions * s.tiles * s.cout }
  var sumFloats: Int { Winograd.positions * s.cin * s.cout }
  /// Scratch: padded input, transformed input, padded dy, transformed dy, and the per-position sums.
  var floats: Int { s.paddedFloats + s.transformedFloats + paddedDy + dyTransformFloats + sumFloats }

  static func make(_ a: Conv2DAttrs, x xd: [Int], target: Target) -> WeightGradientLayout {
    var l = Self(s: WinogradShape(images: 1, cin: xd[1], cout: a.filters, h: xd[2], w: xd[3], padding: a.padding))
    l.s.images = WinogradShape.group(batch: xd[0], bytesPerImage: (l.floats - l.sumFloats) * 4, target: target)
    return l
  }
}

// MARK: Emitting

extension Emitter {
  /// m * xs for a constant matrix of 0, +-c entries: one local per row, the nonzero terms added in order and
  /// scaled once when they share a factor other than 1.
  mutating func combine(_ m: [[Float]], _ xs: [FExpr]) -> ([Stmt], [FExpr]) {
    var out: [Stmt] = [], ys: [FExpr] = []
    for row in m {
      let terms = zip(row, xs).filter { $0.0 != 0 }
      let scale = terms.first.map { abs($0.0) } ?? 1
      let common = terms.allSatisfy { abs($0.0) == scale }
      var sum: FExpr?
      for (c, x) in terms {
        let term = common ? x : .c(abs(c)) * x
        sum = sum.map { c > 0 ? $0 + term : $0 - term } ?? (c > 0 ? term : .c(-1) * term)
      }
      let value = common && scale != 1 ? (sum ?? .c(0)) * .c(scale) : (sum ?? .c(0))
      let name = fresh("w")
      out.append(.local(name, value))
      ys.append(.local(name))
    }
    return (out, ys)
  }

  /// L x R^T for a grid x of expressions: L applied down every column, then R along every row.
  mutating func transform(_ l: [[Float]], _ x: [[FExpr]], _ r: [[Float]]) -> ([Stmt], [[FExpr]]) {
    var out: [Stmt] = []
    var columns: [[FExpr]] = []
    for j in x[0].indices {
      let (s, c) = combine(l, x.map { $0[j] })
      out += s
      columns.append(c)
    }
    var y: [[FExpr]] = []
    for i in l.indices {
      let (s, row) = combine(r, columns.map { $0[i] })
      out += s
      y.append(row)
    }
    return (out, y)
  }

  /// U[xi][co][ci] = (G g G^T)[xi] for every kernel g = `weight(co, ci, ky, kx)`.
  mutating func transformKernels(_ s: WinogradShape, into u: Int, weight: @escaping (IExpr, IExpr, Int, Int) -> FExpr) -> Stmt {
    loop("co", s.cout) { e, co in [e.loop("ci", s.cin) { e, ci in
      let g = (0..<3).map { ky in (0..<3).map { kx in weight(co, ci, ky, kx) } }
      var (out, t) = e.transform(Winograd.kernelTransform, g, Winograd.kernelTransform)
      for xi in 0..<Winograd.positions {
        out.append(.store(.arena, .c(u + xi * s.cout * s.cin) + co * s.cin + ci, t[xi / 4][xi % 4]))
      }
      return out
    }] }
  }

  /// Copies the group's images into the zero-padded planes (whose borders `zeroPadding` cleared once).
  mutating func copyPadded(_ s: WinogradShape, from x: Placement, g: IExpr, into padded: Int) -> Stmt {
    loop("j", s.images) { e, j in [e.loop("c", s.cin) { e, ci in [e.loop("iy", s.h) { e, iy in [e.loop("ix", s.w) { _, ix in
      let dst = IExpr.c(padded) + (j * s.cin + ci) * (s.paddedH * s.paddedW) + (iy + s.padding) * s.paddedW + ix + s.padding
      return [.store(.arena, dst, .load(x.base, .c(x.offset) + (g * s.images + j) * (s.cin * s.h * s.w) + ci * (s.h * s.w) + iy * s.w + ix))]
    }] }] }] }
  }

  /// V[xi][ci][tile] = (B^T d B)[xi] for every 4x4 input tile d of the group (tile = j * tilesPerImage + ty * tilesX + tx).
  mutating func transformInput(_ s: WinogradShape, from x: Placement, g: IExpr, padded: Int, into v: Int) -> Stmt {
    loop("j", s.images) { e, j in [e.loop("c", s.cin) { e, ci in [e.loop("ty", s.tilesY) { e, ty in [e.loop("tx", s.tilesX) { e, tx in
      func pixel(_ r: Int, _ c: Int) -> FExpr {
        if s.copiesInput {
          return .load(.arena, .c(padded) + (j * s.cin + ci) * (s.paddedH * s.paddedW) + (ty * 2 + r) * s.paddedW + tx * 2 + c)
        }
        return .load(x.base, .c(x.offset) + (g * s.images + j) * (s.cin * s.h * s.w) + ci * (s.h * s.w) + (ty * 2 + r) * s.w + tx * 2 + c)
      }
      let d = (0..<4).map { r in (0..<4).map { c in pixel(r, c) } }
      var (out, t) = e.transform(Winograd.inputTransform, d, Winograd.inputTransform)
      let tile = j * s.tilesPerImage + ty * s.tilesX + tx
      for xi in 0..<Winograd.positions {
        out.append(.store(.arena, .c(v + xi * s.cin * s.tiles) + ci * s.tiles + tile, t[xi / 4][xi % 4]))
      }
      return out
    }] }] }] }
  }

  /// The output transform of every tile: `output(j, co, oy, ox, value)` for each output the tile covers
  /// (the last row and column of tiles cover one when oh or ow is odd; those tiles are loops of their own,
  /// so no statement tests a bound).
  mutating func transformOutput(_ s: WinogradShape, products m: Int,
                                _ output: (inout Emitter, IExpr, IExpr, [[FExpr]], IExpr, IExpr) -> [Stmt]) -> [Stmt] {
    let rowRuns = [(0, s.oh / 2, 2), (s.oh / 2, s.oh % 2, 1)].filter { $0.1 > 0 }
    let colRuns = [(0, s.ow / 2, 2), (s.ow / 2, s.ow % 2, 1)].filter { $0.1 > 0 }
    var out: [Stmt] = []
    for (y0, ny, rows) in rowRuns {
      for (x0, nx, cols) in colRuns {
        out.append(loop("j", s.images) { e, j in [e.loop("co", s.cout) { e, co in [e.loop("ty", ny) { e, vy in [e.loop("tx", nx) { e, vx in
          let (ty, tx) = (vy + y0, vx + x0)
          let tile = j * s.tilesPerImage + ty * s.tilesX + tx
          let p = (0..<4).map { r in (0..<4).map { c in
            FExpr.load(.arena, .c(m + (r * 4 + c) * s.cout * s.tiles) + co * s.tiles + tile)
          } }
          let (stmts, y) = e.transform(Array(Winograd.outputTransform.prefix(rows)), p, Array(Winograd.outputTransform.prefix(cols)))
          return stmts + output(&e, j, co, y, ty, tx)
        }] }] }] })
      }
    }
    return out
  }

  /// The 16 GEMMs of a group: M[xi] = U[xi] [cout x cin] * V[xi] [cin x tiles].
  mutating func tileProducts(_ s: WinogradShape, u: Int, v: Int, m: Int) -> Stmt {
    loop("xi", Winograd.positions) { e, xi in
      e.tiledGemm(TiledGemm(m: s.cout, n: s.tiles, k: s.cin, a: (.arena, .c(u) + xi * (s.cout * s.cin)), aRow: s.cin, aCol: 1,
                            b: (.arena, .c(v) + xi * (s.cin * s.tiles)), ldb: s.tiles,
                            c: (.arena, .c(m) + xi * (s.cout * s.tiles)), ldc: s.tiles, accumulate: false))
    }
  }

  /// Zeroes the padded planes once: each group's copy writes only their interiors.
  mutating func zeroPadding(_ s: WinogradShape, at padded: Int) -> [Stmt] {
    s.copiesInput ? [elementwise(s.paddedFloats) { i in .store(.arena, .c(padded) + i, .c(0)) }] : []
  }

  /// A Winograd convolution of `x` over `groups` groups, scratch at `scratch` (`WinogradShape.forwardFloats`),
  /// with `output(j, co, tile outputs, ty, tx, g)` storing each group's results.
  mutating func winogradConv(_ s: WinogradShape, x: Placement, groups: Int, scratch: Int,
                             weight: @escaping (IExpr, IExpr, Int, Int) -> FExpr,
                             output: @escaping (inout Emitter, IExpr, IExpr, [[FExpr]], IExpr, IExpr, IExpr) -> [Stmt],
                             after: (inout Emitter, IExpr) -> [Stmt] = { _, _ in [] }) {
    let u = scratch, padded = u + s.kernelFloats, v = padded + s.paddedFloats, m = v + s.transformedFloats
    body.append(transformKernels(s, into: u, weight: weight))
    body += zeroPadding(s, at: padded)
    body.append(loop("g", groups) { e, g in
      var out: [Stmt] = s.copiesInput ? [e.copyPadded(s, from: x, g: g, into: padded)] : []
      out.append(e.transformInput(s, from: x, g: g, padded: padded, into: v))
      out.append(e.tileProducts(s, u: u, v: v, m: m))
      out += e.transformOutput(s, products: m) { e, j, co, y, ty, tx in output(&e, j, co, y, ty, tx, g) }
      return out + after(&e, g)
    })
  }

  /// conv2d (with relu, max-pool) by Winograd; the epilogue as in `convForward`.
  mutating func winogradForward(_ n: Node, _ a: Conv2DAttrs, relu: Bool, pool: PoolAttrs?) {
    let xd = dims(n.args[0]), x = at(n.args[0]), w = at("\(n.name).weight"), y = at(n.name)
    let s = WinogradShape.forward(a, x: xd, target: target)
    let scratch = plan.scratch[n.name]!.offset, tmp = scratch + s.forwardFloats
    let bias = a.bias ? at("\(n.name).bias") : nil
    func biased(_ v: FExpr, _ co: IExpr) -> FExpr { bias.map { v + .load(.params, .c($0.offset) + co) } ?? v }
    func relued(_ v: FExpr) -> FExpr { relu ? .select(.fgt(v, .c(0)), v, .c(0)) : v }
    let plane = s.oh * s.ow, cs = ConvShape(n: xd[0], c: s.cin, h: s.h, w: s.w, f: s.cout, k: 3, oh: s.oh, ow: s.ow, group: s.images)
    let weight: (IExpr, IExpr, Int, Int) -> FExpr = { co, ci, ky, kx in .load(.params, .c(w.offset) + (co * s.cin + ci) * 9 + (ky * 3 + kx)) }
    let groups = xd[0] / s.images
    if let pool, Self.poolWindow(pool, cs) == 2 {
      // Each 2x2 tile is one pooling window: its max (the first maximum wins, in row order as in the
      // reference), relu and argmax (the position in the conv plane) straight from the output transform.
      let argmax = at("\(n.name).argmax")
      winogradConv(s, x: x, groups: groups, scratch: scratch, weight: weight) { e, j, co, t, ty, tx, g in
        var out: [Stmt] = [], best = "", where_ = ""
        for (k, (r, c)) in [(0, 0), (0, 1), (1, 0), (1, 1)].enumerated() {
          let v = e.fresh("v"), position = FExpr.ofInt((ty * 2 + r) * s.ow + tx * 2 + c)
          out.append(.local(v, biased(t[r][c], co)))
          if k == 0 {
            (best, where_) = (v, e.fresh("at"))
            out.append(.local(where_, position))
          } else {
            let (b2, a2) = (e.fresh("best"), e.fresh("at"))
            let better = Cond.fgt(.local(v), .local(best))
            out.append(.local(a2, .select(better, position, .local(where_))))
            out.append(.local(b2, .select(better, .local(v), .local(best))))
            (best, where_) = (b2, a2)
          }
        }
        let o = (g * s.images + j) * (s.cout * s.tilesPerImage) + co * s.tilesPerImage + ty * s.tilesX + tx
        return out + [.store(y.base, .c(y.offset) + o, .select(.fgt(.local(best), .c(0)), .local(best), .c(0))),
                      .store(argmax.base, .c(argmax.offset) + o, .local(where_))]
      }
    } else if let pool {
      // Other pools read the conv plane: the tiles fill it in the im2col result's layout, then the same epilogue.
      let epilogue = ConvEpilogue(n: n, s: cs, tmp: tmp, table: tmp, window: 1, pooled: 0, y: y, bias: bias)
      winogradConv(s, x: x, groups: groups, scratch: scratch, weight: weight, output: { _, j, co, t, ty, tx, _ in
        t.enumerated().flatMap { r, row in row.enumerated().map { c, v in
          Stmt.store(.arena, .c(tmp) + co * (s.images * plane) + j * plane + (ty * 2 + r) * s.ow + tx * 2 + c, v)
        } }
      }, after: { e, g in [e.poolPlane(epilogue, pool, g: g)] })
    } else {
      winogradConv(s, x: x, groups: groups, scratch: scratch, weight: weight) { e, j, co, t, ty, tx, g in
        var out: [Stmt] = []
        for (r, row) in t.enumerated() {
          for (c, v) in row.enumerated() {
            out.append(.store(y.base, .c(y.offset) + (g * s.images + j) * (s.cout * plane) + co * plane + (ty * 2 + r) * s.ow + tx * 2 + c,
                              relued(biased(v, co))))
          }
        }
        return out
      }
    }
  }

  /// dx = conv(dy, W flipped and transposed) by Winograd: every dx element is one output of one tile.
  mutating func winogradGradInput(_ n: Node, _ a: Conv2DAttrs) {
    let xd = dims(n.args[2]), dy = at(n.args[0]), w = at(n.args[1]), dx = at(n.name)
    let s = WinogradShape.inputGradient(a, x: xd, target: target)
    let scratch = plan.scratch[n.name]!.offset
    // W'[c][f][ky][kx] = W[f][c][2 - ky][2 - kx].
    let weight: (IExpr, IExpr, Int, Int) -> FExpr = { co, ci, ky, kx in .load(w.base, .c(w.offset) + (ci * s.cout + co) * 9 + (8 - ky * 3 - kx)) }
    let plane = s.oh * s.ow
    winogradConv(s, x: dy, groups: xd[0] / s.images, scratch: scratch, weight: weight) { _, j, co, t, ty, tx, g in
      var out: [Stmt] = []
      for (r, row) in t.enumerated() {
        for (cc, v) in row.enumerated() {
          out.append(.store(dx.base, .c(dx.offset) + (g * s.images + j) * (s.cout * plane) + co * plane + (ty * 2 + r) * s.ow + tx * 2 + cc, v))
        }
      }
      return out
    }
  }

  /// dW = G^T [sum over tiles (A dy A^T) . (B^T x B)] G: per group, the input tiles' transform V[xi][c][tile]
  /// and dy's Z[xi][tile][f], then sum[xi][c][f] += V[xi] * Z[xi] (K = the group's tiles), and after every
  /// group the kernel transform's transpose to dW[f][c][ky][kx].
  mutating func winogradGradWeight(_ n: Node, _ a: Conv2DAttrs) {
    let xd = dims(n.args[1]), dy = at(n.args[0]), x = at(n.args[1]), dw = at(n.name)
    let l = WeightGradientLayout.make(a, x: xd, target: target), s = l.s
    let padded = plan.scratch[n.name]!.offset, v = padded + s.paddedFloats, pdy = v + s.transformedFloats
    let z = pdy + l.paddedDy, sum = z + l.dyTransformFloats
    let plane = s.oh * s.ow, py = 2 * s.tilesY, px = 2 * s.tilesX
    body.append(elementwise(l.sumFloats) { i in .store(.arena, .c(sum) + i, .c(0)) })
    body += zeroPadding(s, at: padded)
    if l.paddedDy > 0 { body.append(elementwise(l.paddedDy) { i in .store(.arena, .c(pdy) + i, .c(0)) }) }
    body.append(loop("g", xd[0] / s.images) { e, g in
      var out: [Stmt] = s.copiesInput ? [e.copyPadded(s, from: x, g: g, into: padded)] : []
      out.append(e.transformInput(s, from: x, g: g, padded: padded, into: v))
      func dyAt(_ j: IExpr, _ f: IExpr, _ oy: IExpr, _ ox: IExpr) -> IExpr {
        .c(dy.offset) + (g * s.images + j) * (s.cout * plane) + f * plane + oy * s.ow + ox
      }
      if l.paddedDy > 0 {
        out.append(e.loop("j", s.images) { e, j in [e.loop("f", s.cout) { e, f in [e.loop("oy", s.oh) { e, oy in [e.loop("ox", s.ow) { _, ox in
          [.store(.arena, .c(pdy) + (j * s.cout + f) * (py * px) + oy * px + ox, .load(dy.base, dyAt(j, f, oy, ox)))]
        }] }] }] })
      }
      out.append(e.loop("j", s.images) { e, j in [e.loop("f", s.cout) { e, f in [e.loop("ty", s.tilesY) { e, ty in [e.loop("tx", s.tilesX) { e, tx in
        let d = (0..<2).map { r in (0..<2).map { c in
          l.paddedDy > 0 ? FExpr.load(.arena, .c(pdy) + (j * s.cout + f) * (py * px) + (ty * 2 + r) * px + tx * 2 + c)
                         : FExpr.load(dy.base, dyAt(j, f, ty * 2 + r, tx * 2 + c))
        } }
        let a = Winograd.transposed(Winograd.outputTransform)
        var (out, t) = e.transform(a, d, a)
        let tile = j * s.tilesPerImage + ty * s.tilesX + tx
        for xi in 0..<Winograd.positions {
          out.append(.store(.arena, .c(z + xi * s.tiles * s.cout) + tile * s.cout + f, t[xi / 4][xi % 4]))
        }
        return out
      }] }] }] })
      out.append(e.loop("xi", Winograd.positions) { e, xi in
        e.tiledGemm(TiledGemm(m: s.cin, n: s.cout, k: s.tiles, a: (.arena, .c(v) + xi * (s.cin * s.tiles)), aRow: s.tiles, aCol: 1,
                              b: (.arena, .c(z) + xi * (s.tiles * s.cout)), ldb: s.cout,
                              c: (.arena, .c(sum) + xi * (s.cin * s.cout)), ldc: s.cout, accumulate: true))
      })
      return out
    })
    let gT = Winograd.transposed(Winograd.kernelTransform)
    body.append(loop("f", s.cout) { e, f in [e.loop("c", s.cin) { e, c in
      let m = (0..<4).map { r in (0..<4).map { cc in FExpr.load(.arena, .c(sum + (r * 4 + cc) * s.cin * s.cout) + c * s.cout + f) } }
      var (out, t) = e.transform(gT, m, gT)
      for ky in 0..<3 {
        for kx in 0..<3 { out.append(.store(dw.base, .c(dw.offset) + (f * s.cin + c) * 9 + (ky * 3 + kx), t[ky][kx])) }
      }
      return out
    }] })
  }
}
