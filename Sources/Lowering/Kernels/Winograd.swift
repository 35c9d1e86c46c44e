import GraphIR
import Passes

/// Winograd F(2x2, 3x3) convolution for stride-1 3x3 convs and both of their gradients, in the kernel IR.
///
/// A 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A for the 4x4 input tile d over it and the 3x3 kernel g:
/// 16 multiplies per tile and channel pair where direct convolution does 36. Over a group of images the
/// products become 16 GEMMs (one per position xi of the 4x4 transformed tile) of [tiles x channels] by
/// [channels x filters], register-blocked like every other GEMM, between an input transform and an output
/// transform that keeps the bias, relu and max-pool epilogue fused. The transforms run on vectors of
/// channels: each group is first copied channels-last into a zero-padded buffer, so every pixel of a tile
/// is a contiguous vector of channels, and outputs go channels-last to a staging buffer that one pass turns
/// back to NCHW (a transform along the tiles of a row would read every other float). The gradients reuse the same three
/// matrices: the input gradient is the forward algorithm on dy with the flipped, transposed kernel, and the
/// weight gradient is the exact derivative of the forward formula, G^T [sum over tiles (A dy A^T) . (B^T d B)] G,
/// with the sum over tiles one GEMM per xi. Every sum is in a fixed order, so results are the same run after
/// run and whatever the thread count; the fp32 error is about twice direct convolution's (tested). Inference passes
/// may use F(4x4, 3x3) instead (`WinogradTile`), through the same code with its tile's side and matrices.
enum Winograd {
  /// A matrix's transpose (the weight gradient's A and G).
  static func transposed(_ m: [[Float]]) -> [[Float]] { m[0].indices.map { j in m.map { $0[j] } } }
}

/// A Winograd algorithm F(m x m, 3x3): an m x m output tile from an (m + 2) x (m + 2) input tile, with
/// (m + 2)^2 multiplies per tile and channel pair where direct convolution does 9 m^2.
///
/// F(2x2, 3x3) (16 multiplies for 4 outputs, 2.25x fewer than direct) serves training and both gradients: its
/// transforms are exact in fp32 apart from G's halves. F(4x4, 3x3) (36 for 16 outputs, 4x fewer; points 0, +-1,
/// +-2 and infinity) has larger transforms whose fractions and factors of up to 8 grow the rounding error
/// about tenfold against direct convolution, so it serves inference only, where the cost rule picks it (the
/// transformed tiles per output also fall, 2.25 floats against 4).
struct WinogradTile: Equatable, Sendable {
  /// The output tile's side.
  var m: Int
  /// B^T: the input tile to its transform.
  var inputTransform: [[Float]]
  /// G: the 3x3 kernel to its transform.
  var kernelTransform: [[Float]]
  /// A^T: the product back to the output tile.
  var outputTransform: [[Float]]

  /// The input tile's side, m + 2.
  var alpha: Int { m + 2 }
  /// Positions of the transformed tile: one GEMM each.
  var positions: Int { alpha * alpha }

  static let f2 = WinogradTile(
    m: 2, inputTransform: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    kernelTransform: [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    outputTransform: [[1, 1, 1, 0], [0, 1, -1, -1]])

  static let f4 = WinogradTile(
    m: 4,
    inputTransform: [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                     [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    kernelTransform: [[1.0 / 4, 0, 0], [-1.0 / 6, -1.0 / 6, -1.0 / 6], [-1.0 / 6, 1.0 / 6, -1.0 / 6],
                      [1.0 / 24, 1.0 / 12, 1.0 / 6], [1.0 / 24, -1.0 / 12, 1.0 / 6], [0, 0, 1]],
    outputTransform: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])
}

/// The geometry of one Winograd convolution: `images` images of `cin` channels h x w in, `cout` channels
/// oh x ow out (oh = h + 2 * padding - 2), in 2x2 tiles.
struct WinogradShape {
  var images: Int, cin: Int, cout: Int, h: Int, w: Int, padding: Int
  var tile = WinogradTile.f2
  var oh: Int { h + 2 * padding - 2 }
  var ow: Int { w + 2 * padding - 2 }
  var tilesY: Int { (oh + tile.m - 1) / tile.m }
  var tilesX: Int { (ow + tile.m - 1) / tile.m }
  var tilesPerImage: Int { tilesY * tilesX }
  /// Rows of the forward GEMMs: every tile of the group.
  var tiles: Int { images * tilesPerImage }
  /// The zero-padded channels-last input every 4x4 tile reads without bounds checks.
  var input: ChannelsLast { ChannelsLast(channels: cin, h: h, w: w, paddedH: tile.m * tilesY + 2, paddedW: tile.m * tilesX + 2, padding: padding) }

  var kernelFloats: Int { tile.positions * cout * cin }
  var paddedFloats: Int { images * input.floats }
  var transformedFloats: Int { tile.positions * tiles * cin }
  var productFloats: Int { tile.positions * tiles * cout }
  /// The outputs channels-last, before they go to NCHW.
  var stagingFloats: Int { images * oh * ow * cout }
  /// Scratch of a forward pass (or an input gradient): transformed kernel, padded input, transformed input,
  /// products, staging.
  var forwardFloats: Int { kernelFloats + paddedFloats + transformedFloats + productFloats + stagingFloats }
  /// The conv plane of a group in the im2col result's layout [cout x images * oh * ow] (pools other than 2x2 read it).
  var planeFloats: Int { cout * images * oh * ow }
}

/// Where a pass's transformed tiles or products live: [position][tile - first][channel] from `base`, `tiles`
/// tiles per position (every tile of the group, or one band's).
struct TileBuffer {
  var base: IExpr, tiles: Int, first: IExpr = .c(0)
  /// Offset of channel c of `tile` at position xi, with `channels` channels per tile.
  func at(_ xi: IExpr, _ tile: IExpr, _ c: IExpr, channels: Int) -> IExpr {
    let position: IExpr = xi * (tiles * channels), inBand: IExpr = tile * channels + first * -channels
    return base + position + inBand + c
  }
}

/// One image channels-last, [paddedH][paddedW][channels], with the h x w pixels at (padding, padding).
struct ChannelsLast {
  var channels: Int, h: Int, w: Int, paddedH: Int, paddedW: Int, padding: Int
  var floats: Int { paddedH * paddedW * channels }
  /// Offset of (row, column, channel) in image j.
  func at(_ j: IExpr, _ row: IExpr, _ col: IExpr, _ c: IExpr) -> IExpr { j * floats + row * (paddedW * channels) + col * channels + c }
}

extension WinogradShape {
  /// The share of L2 a group's scratch may take: the rest holds the transformed kernels and the GEMMs' panels.
  static let l2ShareForGroup = 2

  /// The images per group of a Winograd pass: the largest divisor of the batch whose scratch fits in
  /// `1 / l2ShareForGroup` of L2 (at least one image), so every transform and GEMM of the group reads what
  /// the step before it wrote from L2. Measured on Zen 4 (L2 1 MiB) for SimpleCNN's conv2 (356 KB per image):
  /// training wall time with 1 image 0.93x that with 2, 2 the same as 4, 4 0.86x that with 16.
  static func group(batch: Int, bytesPerImage: Int, target: Target) -> Int {
    let most = target.l2 / l2ShareForGroup / max(1, bytesPerImage)
    return (1...max(1, min(batch, most))).last { batch % $0 == 0 }!
  }

  /// A forward pass's geometry for a conv on input dims `xd` in tiles of `tile`.
  static func forward(_ a: Conv2DAttrs, x xd: [Int], tile: WinogradTile, target: Target) -> WinogradShape {
    var s = WinogradShape(images: 1, cin: xd[1], cout: a.filters, h: xd[2], w: xd[3], padding: a.padding, tile: tile)
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
}

/// The weight gradient's geometry: the forward's input tiles, and dy channels-last over the same tiles
/// (zero where an odd output size leaves the last tiles one row or column short).
struct WeightGradientLayout {
  var s: WinogradShape
  var dy: ChannelsLast { ChannelsLast(channels: s.cout, h: s.oh, w: s.ow, paddedH: 2 * s.tilesY, paddedW: 2 * s.tilesX, padding: 0) }
  var dyFloats: Int { s.images * dy.floats }
  var dyTransformFloats: Int { s.tile.positions * s.tiles * s.cout }
  var sumFloats: Int { s.tile.positions * s.cin * s.cout }
  /// Scratch: padded input, transformed input, dy channels-last, transformed dy, and the per-position sums.
  var floats: Int { s.paddedFloats + s.transformedFloats + dyFloats + dyTransformFloats + sumFloats }

  static func make(_ a: Conv2DAttrs, x xd: [Int], target: Target) -> WeightGradientLayout {
    var l = Self(s: WinogradShape(images: 1, cin: xd[1], cout: a.filters, h: xd[2], w: xd[3], padding: a.padding))
    l.s.images = WinogradShape.group(batch: xd[0], bytesPerImage: (l.floats - l.sumFloats) * 4, target: target)
    return l
  }
}

/// A value the transforms combine: a float (the kernel transforms) or a vector of channels (the tiles).
protocol TileValue {
  static func + (a: Self, b: Self) -> Self
  static func - (a: Self, b: Self) -> Self
  static func scaled(_ a: Self, _ c: Float) -> Self
  static func negated(_ a: Self) -> Self
  /// The statement declaring local `name` with this value, and the local's value.
  func declared(as name: String) -> (Stmt, Self)
}

extension FExpr: TileValue {
  static func scaled(_ a: FExpr, _ c: Float) -> FExpr { a * .c(c) }
  static func negated(_ a: FExpr) -> FExpr { .c(-1) * a }
  func declared(as name: String) -> (Stmt, FExpr) { (.local(name, self), .local(name)) }
}

extension VExpr: TileValue {
  static func + (a: VExpr, b: VExpr) -> VExpr { .add(a, b) }
  static func - (a: VExpr, b: VExpr) -> VExpr { .sub(a, b) }
  static func scaled(_ a: VExpr, _ c: Float) -> VExpr { .mul(a, .broadcast(.c(c))) }
  static func negated(_ a: VExpr) -> VExpr { .mul(a, .broadcast(.c(-1))) }
  func declared(as name: String) -> (Stmt, VExpr) { (.vlocal(name, self), .local(name)) }
}

// MARK: Choosing the algorithm

/// Which algorithm a conv pass got, and why (printed by `cnnc compile` and `cnnc bench --profile`).
public struct ConvChoice: Equatable, Sendable {
  public var node: String
  public var algorithm: ConvAlgorithm
  /// Winograd's output tile side (2 or 4; 2 for im2col, where it means nothing).
  public var tile: Int
  public var reason: String
  /// The algorithm as printed: im2col, winograd (F(2x2, 3x3)) or winograd_f4 (F(4x4, 3x3)).
  public var label: String { algorithm == .winograd && tile == 4 ? "winograd_f4" : algorithm.rawValue }
}

/// The algorithm the cost rule picked for a conv pass: Winograd's tile (when it is Winograd) and the reason.
struct ConvPick {
  var algorithm: ConvAlgorithm
  var tile = WinogradTile.f2
  var reason: String
  var isWinograd: Bool { algorithm == .winograd }
}

/// The cost rule `--conv auto` applies to each conv pass, a model in core cycles per image.
///
/// im2col + GEMM does 9 multiply-adds per output and channel pair plus one copied float per column entry;
/// Winograd F(m x m, 3x3) does (m + 2)^2 per tile (m^2 outputs) and channel pair plus the transforms: (m + 2)^2
/// floats per tile of each input channel and of each output channel, written and read once more. The GEMMs run at
/// `gemmShareOfPeak` of the FMA peak (2 pipes x lanes multiply-adds a cycle; an assumed share: the micro-kernels
/// alone measure 64-99% of it on Zen 1-4 with `cnnc bench --kernels`), a transformed float costs
/// `cyclesPerTransformedFloat` (its loads, adds and store). On SimpleCNN the rule picks im2col for conv1 and
/// Winograd for conv2, the faster of the two for each, as measured (README, "Convolutions").
enum ConvCost {
  static let gemmShareOfPeak = 0.6
  static let cyclesPerTransformedFloat = 1.0
  /// Below this many channels on either side a Winograd GEMM's K (or its M) is too short to amortise the
  /// accumulators' loads and stores, and the transforms dominate: the first conv of an image network.
  static let minimumChannels = 8

  static func cycles(macs: Double, copied: Double, target: Target) -> Double {
    macs / (2 * Double(target.lanes) * gemmShareOfPeak) + copied * cyclesPerTransformedFloat
  }

  /// Winograd's cycles per image with `tile`: the GEMMs, the transforms, and the transformed kernels once per pass.
  ///
  /// The transformed kernels are charged once per pass, so their share per image falls with the batch: at batch 1
  /// ResNet-18's 512-channel layers (7x7 outputs) spent more on transforming 2.4M weights than Winograd saved in
  /// multiplies, and an inference pass that has them prepared still streams (m + 2)^2 / 9 times the weights.
  ///
  /// Transformed kernels larger than L2 are streamed from memory once per group of images the pass transforms
  /// together (`group`), not once per pass: ResNet-18's 512-channel layers (7x7 outputs, 4 tiles an image, 38 MB
  /// of F(4x4, 3x3) kernels, groups of one image) took 36 ms per 8 images against im2col's 23 (Zen 4, a training
  /// step's frozen part), where charging the kernels once per batch had picked Winograd. Inference of ResNet-18 at
  /// batch 16 then ran 1.25-1.3x faster, at batch 1 as before (where the group is the batch). Counting the stream
  /// as overlapping the GEMMs (the longer of the two) instead picked Winograd at batch 1 where it lost 5%.
  static func winogradCycles(_ tile: WinogradTile, c: Double, f: Double, oh: Int, ow: Int, images: Int, group: Int, target: Target) -> Double {
    let tiles = Double(((oh + tile.m - 1) / tile.m) * ((ow + tile.m - 1) / tile.m)), p = Double(tile.positions)
    let kernels = p * c * f, streams = kernels * Double(MemoryLayout<Float>.size) > Double(target.l2) ? group : images
    return cycles(macs: kernels * tiles, copied: p * (c + f) * tiles + kernels / Double(max(1, streams)), target: target)
  }

  /// The algorithm for a 3x3-or-other conv pass of `cin` channels to `cout` over an oh x ow output of each of
  /// `images` images, with `eligible` nil when Winograd applies (else why it does not), Winograd with the
  /// cheaper of `tiles` (F(2x2, 3x3) first: it wins a tie).
  static func choose(cin: Int, cout: Int, oh: Int, ow: Int, images: Int, group: (WinogradTile) -> Int, eligible: String?,
                     tiles: [WinogradTile], target: Target) -> ConvPick {
    if let eligible { return ConvPick(algorithm: .im2col, reason: eligible) }
    let (c, f) = (Double(cin), Double(cout))
    let direct = cycles(macs: 9 * c * f * Double(oh * ow), copied: 9 * c * Double(oh * ow), target: target)
    // A forced tile is the only one costed; F(4x4, 3x3) only where `tiles` allows it.
    let tiles = target.convAlgorithm == .winograd ? [.f2] : target.convAlgorithm == .winogradF4 ? [tiles.last!] : tiles
    let costs = tiles.map { ($0, winogradCycles($0, c: c, f: f, oh: oh, ow: ow, images: images, group: min(images, group($0)), target: target)) }
    let (tile, winograd) = costs.min { $0.1 < $1.1 }!
    func k(_ cycles: Double) -> String { "\(Int((cycles / 1000).rounded()))k" }
    let others = costs.filter { $0.0 != tile }.map { "\(k($0.1)) for F(\($0.0.m)x\($0.0.m), 3x3)" }
    let named = tiles.count > 1 ? " (F(\(tile.m)x\(tile.m), 3x3)\(others.map { "; \($0)" }.joined()))" : ""
    let model = "model \(k(winograd))\(named) vs \(k(direct)) cycles per image for im2col"
    switch target.convAlgorithm {
    case .im2col: return ConvPick(algorithm: .im2col, reason: "--conv im2col")
    case .winograd, .winogradF4: return ConvPick(algorithm: .winograd, tile: tile, reason: "--conv \(target.convAlgorithm.rawValue); \(model)")
    case .auto:
      if min(cin, cout) < minimumChannels { return ConvPick(algorithm: .im2col, reason: "\(min(cin, cout)) channels: too few for Winograd's GEMMs") }
      return winograd < direct ? ConvPick(algorithm: .winograd, tile: tile, reason: model) : ConvPick(algorithm: .im2col, reason: model)
    }
  }

  /// The choice for a forward conv (or a weight gradient, whose transforms are the same) of attributes `a` on input `x`;
  /// `largeTiles` lets it take F(4x4, 3x3) (an unpooled inference pass).
  static func forward(_ a: Conv2DAttrs, x: [Int], target: Target, largeTiles: Bool = false) -> ConvPick {
    let o = a.output(x)
    let eligible: String? = a.kernel != 3 ? "kernel \(a.kernel)x\(a.kernel): Winograd F(2x2, 3x3) is for 3x3"
      : a.stride != 1 ? "stride \(a.stride): Winograd is for stride 1" : nil
    return choose(cin: x[1], cout: a.filters, oh: o.h, ow: o.w, images: x[0], group: { WinogradShape.forward(a, x: x, tile: $0, target: target).images },
                  eligible: eligible, tiles: largeTiles ? [.f2, .f4] : [.f2], target: target)
  }

  /// The choice for an input gradient: the forward algorithm on dy with padding 2 - padding.
  static func inputGradient(_ a: Conv2DAttrs, x: [Int], target: Target) -> ConvPick {
    if a.kernel == 3, a.stride == 1, a.padding > 2 {
      return ConvPick(algorithm: .im2col, reason: "padding \(a.padding): the input gradient as a conv needs padding 2 - \(a.padding)")
    }
    return forward(a, x: x, target: target)
  }
}


// MARK: Emitting

extension Emitter {
  /// m * xs for a constant matrix of 0, +-c entries: one local per row, the positive terms first, then
  /// the negative ones subtracted, scaled once when every term shares a factor other than 1.
  mutating func combine<T: TileValue>(_ m: [[Float]], _ xs: [T]) -> ([Stmt], [T]) {
    var out: [Stmt] = [], ys: [T] = []
    for row in m {
      let terms = zip(row, xs).filter { $0.0 != 0 }.sorted { ($0.0 > 0 ? 0 : 1) < ($1.0 > 0 ? 0 : 1) }
      let scale = terms.first.map { abs($0.0) } ?? 1
      let common = terms.allSatisfy { abs($0.0) == scale }
      var sum: T?
      for (c, x) in terms {
        let term = common ? x : T.scaled(x, abs(c))
        sum = sum.map { c > 0 ? $0 + term : $0 - term } ?? (c > 0 ? term : T.negated(term))
      }
      guard var value = sum else { preconditionFailure("a transform row of zeros") }
      if common, scale != 1 { value = T.scaled(value, scale) }
      let (declaration, local) = value.declared(as: fresh("w"))
      out.append(declaration)
      ys.append(local)
    }
    return (out, ys)
  }

  /// L x R^T for a grid x of values: L applied down every column, then R along every row.
  mutating func transform<T: TileValue>(_ l: [[Float]], _ x: [[T]], _ r: [[Float]]) -> ([Stmt], [[T]]) {
    var out: [Stmt] = []
    var columns: [[T]] = []
    for j in x[0].indices {
      let (s, c) = combine(l, x.map { $0[j] })
      out += s
      columns.append(c)
    }
    var y: [[T]] = []
    for i in l.indices {
      let (s, row) = combine(r, columns.map { $0[i] })
      out += s
      y.append(row)
    }
    return (out, y)
  }

  /// Ut[xi][ci][co] = (G g G^T)[xi] for every kernel g = `weight(co, ci, ky, kx)` (rows of the GEMMs' B),
  /// of the output channels `channels` (first, count).
  mutating func transformKernels(_ s: WinogradShape, into u: (base: Base, offset: Int), channels: (IExpr, Int), weight: (IExpr, IExpr, Int, Int) -> FExpr) -> Stmt {
    loop("ci", s.cin) { e, ci in [e.loop("co", channels.1) { e, c in
      let co = channels.0 + c
      let g = (0..<3).map { ky in (0..<3).map { kx in weight(co, ci, ky, kx) } }
      var (out, t) = e.transform(s.tile.kernelTransform, g, s.tile.kernelTransform)
      for xi in 0..<s.tile.positions {
        out.append(.store(u.base, .c(u.offset + xi * s.cin * s.cout) + ci * s.cout + co, t[xi / s.tile.alpha][xi % s.tile.alpha]))
      }
      return out
    }] }
  }

  /// Copies images g * images ..< (g + 1) * images of NCHW `x` channels-last into `padded` (whose border
  /// `zero` cleared once: the copies write only the interior).
  ///
  /// Row by row, every channel of a row before the next row: the row's stores then hit the same `w` cache lines
  /// channel after channel while they are in L1. Channel by channel over the whole plane, each store missed L1
  /// (a stride of a pixel's channels): 0.42 ms for one 64-channel 56x56 image on one thread.
  /// A channels-last `x` (`sourceLast`) is copied a pixel's channels at a time.
  mutating func copyChannelsLast(_ c: ChannelsLast, images: Int, from x: Placement, g: IExpr, into padded: Int,
                                 channels: (first: IExpr, count: Int)? = nil, sourceLast: Bool = false) -> Stmt {
    let (first, count) = channels ?? (.c(0), c.channels)
    if sourceLast {
      return loop("j", images) { e, j in [e.loop("iy", c.h) { e, iy in [e.loop("ix", c.w) { e, ix in [e.loop("c", count) { _, cv in
        let ch = cv + first
        return [.store(.arena, .c(padded) + c.at(j, iy + c.padding, ix + c.padding, ch),
                       .load(x.base, .c(x.offset) + (((g * images + j) * c.h + iy) * c.w + ix) * c.channels + ch))]
      }] }] }] }
    }
    return loop("j", images) { e, j in [e.loop("iy", c.h) { e, iy in [e.loop("c", count) { e, cv in
      let ch = cv + first
      return [e.loop("ix", c.w) { _, ix in
      [.store(.arena, .c(padded) + c.at(j, iy + c.padding, ix + c.padding, ch),
              .load(x.base, .c(x.offset) + (g * images + j) * (c.channels * c.h * c.w) + ch * (c.h * c.w) + iy * c.w + ix))]
      }]
    }] }] }
  }

  /// V[xi][tile][ci] = (B^T d B)[xi] for every 4x4 input tile d of the group (tile = j * tilesPerImage + ty * tilesX + tx).
  /// With `pairs` (a bf16 program's forward and input-gradient GEMMs, whose A is V) each tile's channels are stored
  /// as their bf16 pairs, (cin + 1) / 2 words a tile: the GEMMs' A packed as it is written.
  mutating func transformInput(_ s: WinogradShape, padded: Int, into v: Int, tileRows: (first: IExpr, count: Int)? = nil, pairs: Bool = false) -> Stmt {
    transformInput(s, padded: padded, into: TileBuffer(base: .c(v), tiles: s.tiles), tileRows: tileRows, pairs: pairs)
  }

  /// The input transform into `v` (see the one above).
  mutating func transformInput(_ s: WinogradShape, padded: Int, into v: TileBuffer, tileRows: (first: IExpr, count: Int)? = nil,
                               pairs: Bool = false) -> Stmt {
    let c = s.input, (firstRow, rows) = tileRows ?? (.c(0), s.tilesY), (m, alpha) = (s.tile.m, s.tile.alpha), lanes = self.lanes
    return loop("j", s.images) { e, j in [e.loop("ty", rows) { e, vy in let ty = vy + firstRow; return [e.loop("tx", s.tilesX) { e, tx in
      let tile = j * s.tilesPerImage + ty * s.tilesX + tx
      // The transformed vector of `count` channels from c0, at every position.
      func transformed(_ e: inout Emitter, _ c0: IExpr, _ count: Int) -> ([Stmt], [VExpr]) {
        let d = (0..<alpha).map { r in (0..<alpha).map { col in VExpr.load(.arena, .c(padded) + c.at(j, ty * m + r, tx * m + col, c0), lanes: count) } }
        let (out, t) = e.transform(s.tile.inputTransform, d, s.tile.inputTransform)
        return (out, (0..<s.tile.positions).map { t[$0 / alpha][$0 % alpha] })
      }
      guard pairs else {
        return e.vectorRuns(s.cin) { e, c0, count in
          let (out, t) = transformed(&e, c0, count)
          return out + t.enumerated().map { xi, value in .vstore(.arena, v.at(.c(xi), tile, c0, channels: s.cin), value, lanes: count) }
        }
      }
      // Two vectors of channels make one of pairs; the last run's second vector is partial or absent (zeros).
      let words = (s.cin + 1) / 2
      func run(_ e: inout Emitter, _ c0: IExpr, _ w0: IExpr, _ count: Int) -> [Stmt] {
        var (out, first) = transformed(&e, c0, min(lanes, count))
        var second = [VExpr](repeating: .zero, count: first.count)
        if count > lanes {
          let (code, t) = transformed(&e, c0 + lanes, count - lanes)
          (out, second) = (out + code, t)
        }
        return out + zip(first, second).enumerated().map { xi, both in
          .vstore(.arena, v.at(.c(xi), tile, w0, channels: words), .bf16Pack(both.0, both.1), lanes: (count + 1) / 2)
        }
      }
      let block = 2 * lanes, full = s.cin / block
      var out: [Stmt] = full > 0 ? [e.loop("cb", full) { e, b in run(&e, b * block, b * lanes, block) }] : []
      if s.cin % block > 0 { out += run(&e, .c(full * block), .c(full * lanes), s.cin % block) }
      return out
    }] }] }
  }

  /// The 16 GEMMs of a group: Mt[xi] = V[xi] [tiles x cin] * Ut[xi] [cin x cout], the columns of the output
  /// channels `channels` (first, count); in a bf16 program V and Ut as their pairs (`transformInput`, `packedKernels`).
  mutating func tileProducts(_ s: WinogradShape, u: (base: Base, offset: Int), pairs: (Base, IExpr)?, v: Int, m: Int, channels: (IExpr, Int),
                             groups: Int) -> Stmt {
    loop("xi", s.tile.positions) { e, xi in
      var gemm = TiledGemm(m: s.tiles, n: channels.1, k: s.cin, a: (.arena, .c(v) + xi * (s.tiles * s.cin)), aRow: s.cin, aCol: 1,
                           b: (u.base, .c(u.offset) + xi * (s.cin * s.cout) + channels.0), ldb: s.cout,
                           c: (.arena, .c(m) + xi * (s.tiles * s.cout) + channels.0), ldc: s.cout, accumulate: false,
                           calls: s.tile.positions * groups * (s.cout / channels.1))
      if let (base, at) = pairs {
        // In a bf16 program V is written in pairs too (`transformInput`).
        let words = (s.cin + 1) / 2
        (gemm.b, gemm.bPairs) = ((base, at + xi * (words * s.cout) + channels.0), true)
        (gemm.a, gemm.aRow, gemm.aPairs) = ((.arena, .c(v) + xi * (s.tiles * words)), words, true)
      }
      return e.tiledGemm(gemm)
    }
  }

  /// In a bf16 program, Ut packed in pairs along the input channels once (`packedOnce`: per call, or at inference per set
  /// of weights), for every GEMM: where the pairs are; nil in f32.
  mutating func packedKernels(_ s: WinogradShape, u: (base: Base, offset: Int)) -> (Base, IExpr)? {
    let rows = (s.cin + 1) / 2 * s.cout
    return packedOnce(s.tile.positions * rows) { e, at, out in
      [e.loop("xi", s.tile.positions) { e, xi in
        e.packRowPairs(k: s.cin, count: s.cout, from: u.base, into: at + xi * rows, in: out) { p, j in .c(u.offset) + xi * (s.cin * s.cout) + p * s.cout + j }
      }]
    }
  }

  /// The output transform of every tile, on vectors of output channels: `output(j, outputs, ty, tx, first, lanes)`
  /// stores the tile's outputs (2x2, or fewer where an odd oh or ow leaves the last row or column of tiles
  /// one short: those tiles are loops of their own, so no statement tests a bound).
  /// `tileRows` (first, count of whole tiles) limits it to those rows of tiles.
  mutating func transformOutput(_ s: WinogradShape, products m: TileBuffer, channels: (IExpr, Int), tileRows: (first: IExpr, count: Int)? = nil,
                                _ output: (inout Emitter, IExpr, [[VExpr]], IExpr, IExpr, IExpr, Int) -> [Stmt]) -> [Stmt] {
    let (side, alpha) = (s.tile.m, s.tile.alpha)
    let rowRuns: [(IExpr, Int, Int)] = tileRows.map { [($0.first, $0.count, side)] }
      ?? [(.c(0), s.oh / side, side), (.c(s.oh / side), s.oh % side == 0 ? 0 : 1, s.oh % side)].filter { $0.1 > 0 }
    let colRuns = [(0, s.ow / side, side), (s.ow / side, s.ow % side == 0 ? 0 : 1, s.ow % side)].filter { $0.1 > 0 }
    var out: [Stmt] = []
    for (y0, ny, rows) in rowRuns {
      for (x0, nx, cols) in colRuns {
        out.append(loop("j", s.images) { e, j in [e.loop("ty", ny) { e, vy in [e.loop("tx", nx) { e, vx in
          let (ty, tx) = (vy + y0, vx + x0)
          let tile = j * s.tilesPerImage + ty * s.tilesX + tx
          return e.vectorRuns(channels.1, from: channels.0) { e, c0, lanes in
            let p = (0..<alpha).map { r in (0..<alpha).map { c in
              VExpr.load(.arena, m.at(.c(r * alpha + c), tile, c0, channels: s.cout), lanes: lanes)
            } }
            let (stmts, y) = e.transform(Array(s.tile.outputTransform.prefix(rows)), p, Array(s.tile.outputTransform.prefix(cols)))
            return stmts + output(&e, j, y, ty, tx, c0, lanes)
          }
        }] }] })
      }
    }
    return out
  }

  /// Moves a group's channels-last staging [images][positions][channels] to `to(j, c, position)` (NCHW or
  /// the im2col layout), the channels `range` (first, count) or all: the loads stride, the stores run along
  /// the positions.
  /// `positionRange` (first, count) limits the move to those positions.
  ///
  /// In blocks of `Self.transposeBlock` positions, every channel of a block before the next block, so the block's
  /// loads hit the same cache lines channel after channel while they are in L1 (see `copyChannelsLast`).
  mutating func fromChannelsLast(_ staging: Int, images: Int, positions: Int, channels: Int, range: (IExpr, Int)? = nil,
                                 positionRange: (IExpr, Int)? = nil, _ to: (IExpr, IExpr, IExpr, FExpr) -> Stmt) -> Stmt {
    let (first, count) = range ?? (.c(0), channels), (q0, qs) = positionRange ?? (.c(0), positions)
    let block = Self.transposeBlock, blocks = [(IExpr.c(0), qs / block, block), (.c(qs / block * block), qs % block == 0 ? 0 : 1, qs % block)]
    return loop("j", images) { e, j in blocks.filter { $0.1 > 0 }.flatMap { start, n, size in
      func moves(_ e: inout Emitter, _ qb: IExpr) -> [Stmt] {
        [e.loop("c", count) { e, k in
          let c = first + k
          return [e.loop("q", size) { _, qv in
            let q = qv + qb * block + start + q0
            return [to(j, c, q, .load(.arena, .c(staging) + (j * positions + q) * channels + c))]
          }]
        }]
      }
      // One block needs no loop of blocks (the one-block planes of small nets read as before).
      return n == 1 ? moves(&e, .c(0)) : [e.loop("qb", n) { e, qb in moves(&e, qb) }]
    } }
  }

  /// Positions per block of a move out of channels-last: their cache lines of one channel's loads are 64 lines,
  /// which L1 keeps while the other channels read them.
  static let transposeBlock = 64

  /// Moves a group's channels-last staging to a channels-last `to(j, c, position)`, the channels `range` (first,
  /// count) or all, the positions `positionRange` or all: loads and stores both run along the channels.
  mutating func toChannelsLast(_ staging: Int, images: Int, positions: Int, channels: Int, range: (IExpr, Int)? = nil,
                               positionRange: (IExpr, Int)? = nil, _ to: (IExpr, IExpr, IExpr, FExpr) -> Stmt) -> Stmt {
    let (first, count) = range ?? (.c(0), channels), (q0, qs) = positionRange ?? (.c(0), positions)
    return loop("j", images) { e, j in [e.loop("q", qs) { e, qv in
      let q = qv + q0
      return [e.loop("c", count) { _, k in
        let c = first + k
        return [to(j, c, q, .load(.arena, .c(staging) + (j * positions + q) * channels + c))]
      }]
    }] }
  }

  /// Rows of tiles per band of a one-image inference Winograd pass whose transformed input and products would
  /// leave L2 (ResNet-18's 64-channel 56x56 convs: 3.2 MB each), or nil: the largest divisor of the tile rows
  /// whose band takes at most what `Self.bandShareOfL2Winograd` of L2 leaves beside the transformed kernels (every
  /// band's 16 or 36 GEMMs read all of them), if its GEMMs keep `Self.leastBandTiles` rows. Output planes whole in
  /// tiles only (no short tiles in a band).
  func winogradBand(_ s: WinogradShape, groups: Int) -> Int? {
    let rowBytes = s.tilesX * s.tile.positions * (s.cin + s.cout) * MemoryLayout<Float>.size
    let budget = Int(Double(target.l2) * Self.bandShareOfL2Winograd) - s.kernelFloats * MemoryLayout<Float>.size
    guard !training, s.images == 1, s.oh % s.tile.m == 0, s.ow % s.tile.m == 0, s.tilesY * rowBytes > budget,
          let rows = (1...s.tilesY).last(where: { s.tilesY % $0 == 0 && $0 * rowBytes <= budget }), rows < s.tilesY,
          rows * s.tilesX >= Self.leastBandTiles else { return nil }
    return rows
  }

  /// The share of L2 a Winograd band and the transformed kernels may take together; the rest holds the
  /// micro-kernels' panels and the band's input rows.
  static let bandShareOfL2Winograd = 0.75

  /// The fewest tiles (GEMM rows) a Winograd band may have: a few row blocks of the micro-kernels.
  static let leastBandTiles = 24

  /// Winograd passes of one image at a time at inference (`images` of them) in bands of `bandRows` rows of tiles
  /// (`winogradBand`): after an image's channels-last copy, each band's input transform, 16 GEMMs over every output channel, output transform
  /// (each output `finished(value, first channel, lanes)`) and move-out to NCHW with the tail run back to back
  /// while the band's transformed tiles and products are in L2; the bands split over the pool.
  mutating func winogradBanded(_ s: WinogradShape, x: Placement, y: Placement, images: Int, scratch: Int, bandRows: Int,
                               layouts: (input: Bool, output: Bool) = (false, false), weight: (IExpr, IExpr, Int, Int) -> FExpr, tail: ConvTail,
                               finished: (VExpr, IExpr, Int) -> VExpr) {
    let u = (base: Base.prepared, offset: prepared(s.kernelFloats))
    let bands = s.tilesY / bandRows, tiles = bandRows * s.tilesX
    let parts = parallelParts(macs: s.tiles * s.tile.positions * s.cin * s.cout)
    // Each part's band of transformed tiles and products is rewritten band after band in place, so it stays in
    // that core's L2 (`winogradBandFloats`).
    let bandFloats = tiles * s.tile.positions * (s.cin + s.cout)
    let padded = scratch + s.kernelFloats, bandsAt = padded + s.paddedFloats, staging = bandsAt + parts * bandFloats
    prepare.append(transformKernels(s, into: u, channels: (.c(0), s.cout), weight: weight))
    body.append(zeroArena(padded, s.paddedFloats))
    let copyParts = parallelParts(units: s.cin, macs: s.cin * s.h * s.w * Self.elementwiseWeight)
    body.append(loop("g", images) { e, g in
      var out = e.inParts(copyParts, of: "input channels") { e, part in
        [e.copyChannelsLast(s.input, images: 1, from: x, g: g, into: padded, channels: (part * (s.cin / copyParts), s.cin / copyParts),
                            sourceLast: layouts.input)]
      }
      out += e.inParts(parts, of: "bands of tile rows") { e, part in
        e.rowsInParts([0..<bands], parts: parts, part: part) { e, band, _ in
          let ty0 = band * bandRows, t0 = ty0 * s.tilesX
          let v = TileBuffer(base: .c(bandsAt) + part * bandFloats, tiles: tiles, first: t0)
          let m = TileBuffer(base: v.base + tiles * s.tile.positions * s.cin, tiles: tiles, first: t0)
          var out: [Stmt] = [e.transformInput(s, padded: padded, into: v, tileRows: (ty0, bandRows))]
          out.append(e.loop("xi", s.tile.positions) { e, xi in
            e.tiledGemm(TiledGemm(m: tiles, n: s.cout, k: s.cin, a: (.arena, v.at(xi, t0, .c(0), channels: s.cin)), aRow: s.cin, aCol: 1,
                                  b: (u.base, .c(u.offset) + xi * (s.cin * s.cout)), ldb: s.cout,
                                  c: (.arena, m.at(xi, t0, .c(0), channels: s.cout)), ldc: s.cout, accumulate: false,
                                  calls: s.tile.positions * bands * images))
          })
          out += e.transformOutput(s, products: m, channels: (.c(0), s.cout), tileRows: (ty0, bandRows)) { _, j, t, ty, tx, c0, lanes in
            Self.stageTile(s, j, t, ty, tx, c0, lanes, staging) { finished($0, c0, lanes) }
          }
          let band = (ty0 * s.tile.m * s.ow, bandRows * s.tile.m * s.ow)
          return out + [e.moveOut(s, staging: staging, g: g, images: 1, to: y, last: layouts.output, tail: tail, positionRange: band)]
        }
      }
      return out
    })
  }

  /// A Winograd convolution of `x` over `groups` groups, scratch at `scratch` (`WinogradShape.forwardFloats`):
  /// `output(j, outputs, ty, tx, first channel, lanes, staging)` stores each tile's outputs to the staging buffer,
  /// `after(g, staging, channels)` moves those of the output channels (first, count) out.
  ///
  /// With `parts` > 1 (an inference program's large conv, for a pool) the output channels split into that
  /// many equal runs of whole vectors: the kernel transform, and per group the GEMM columns, output
  /// transform and move-out of each run, are one part of a parallel statement. Every value is computed by
  /// the same operations in the same order as in one part.
  mutating func winogradConv(_ s: WinogradShape, x: Placement, groups: Int, scratch: Int, parts: Int = 1, inputLast: Bool = false,
                             weight: (IExpr, IExpr, Int, Int) -> FExpr,
                             output: (inout Emitter, IExpr, [[VExpr]], IExpr, IExpr, IExpr, Int, Int) -> [Stmt],
                             after: (inout Emitter, IExpr, Int, (IExpr, Int)) -> [Stmt]) {
    // An inference program transforms the kernels once per set of weights (`prepare`), into the prepared buffer.
    let u = training ? (base: Base.arena, offset: scratch) : (base: Base.prepared, offset: prepared(s.kernelFloats))
    let padded = scratch + s.kernelFloats, v = padded + s.paddedFloats, m = v + s.transformedFloats
    let staging = m + s.productFloats
    precondition(parts == 1 || s.cout % (parts * lanes) == 0, "Winograd parts split the output channels in whole vectors")
    let perPart = s.cout / parts
    // A training step transforms the kernels once for its batch: left scalar, it costs nothing there, and
    // the loop vectoriser's compile time before the first step is saved. An inference program does it when
    // its weights are new, vectorised.
    let transform = inParts(parts, of: "output channels") { e, part in
      let transform = e.transformKernels(s, into: u, channels: (part * perPart, perPart), weight: weight)
      return [e.training ? .scalarLoops([transform]) : transform]
    }
    if training { body += transform } else { prepare += transform }
    let pairs = packedKernels(s, u: u)
    body.append(zeroArena(padded, s.paddedFloats))
    // At inference the copy splits by input channels and the input transform by rows of tiles, like the rest.
    let copyParts = parallelParts(units: s.cin, macs: s.images * s.cin * s.h * s.w * Self.elementwiseWeight)
    let rowParts = parallelParts(units: s.tilesY, macs: s.tiles * s.cin * s.tile.positions * Self.elementwiseWeight)
    body.append(loop("g", groups) { e, g in
      var out = e.inParts(copyParts, of: "input channels") { e, part in
        [e.copyChannelsLast(s.input, images: s.images, from: x, g: g, into: padded, channels: (part * (s.cin / copyParts), s.cin / copyParts),
                            sourceLast: inputLast)]
      }
      out += e.inParts(rowParts, of: "rows of tiles") { e, part in
        [e.transformInput(s, padded: padded, into: v, tileRows: (part * (s.tilesY / rowParts), s.tilesY / rowParts), pairs: pairs != nil)]
      }
      return out + e.inParts(parts, of: "output channels") { e, part in
        let channels = (part * perPart, perPart)
        return [e.tileProducts(s, u: u, pairs: pairs, v: v, m: m, channels: channels, groups: groups)]
          + e.transformOutput(s, products: TileBuffer(base: .c(m), tiles: s.tiles), channels: channels) { e, j, y, ty, tx, c0, lanes in output(&e, j, y, ty, tx, c0, lanes, staging) }
          + after(&e, g, staging, channels)
      }
    })
  }

  /// The parts a Winograd pass over `groups` groups of `s` splits into (see `winogradConv`).
  func winogradParts(_ s: WinogradShape, groups: Int) -> Int {
    guard s.cout % lanes == 0 else { return 1 }
    return parallelParts(units: s.cout / lanes, macs: groups * s.tiles * s.tile.positions * s.cin * s.cout)
  }

  /// Stores a tile's outputs channels-last at staging[j][oy][ox][c].
  static func stageTile(_ s: WinogradShape, _ j: IExpr, _ t: [[VExpr]], _ ty: IExpr, _ tx: IExpr, _ c0: IExpr, _ lanes: Int, _ staging: Int,
                        _ value: (VExpr) -> VExpr = { $0 }) -> [Stmt] {
    t.enumerated().flatMap { r, row in row.enumerated().map { c, v in
      Stmt.vstore(.arena, .c(staging) + ((j * s.oh + ty * s.tile.m + r) * s.ow + tx * s.tile.m + c) * s.cout + c0, value(v), lanes: lanes)
    } }
  }

  /// `v` plus the bias of channels c0 ..< c0 + lanes, then scaled and shifted by a folded batch norm of `channels`.
  static func biasedVector(_ v: VExpr, _ c0: IExpr, _ lanes: Int, bias: Placement?, fold: Placement?, channels: Int) -> VExpr {
    let b = bias.map { .add(v, .load(.params, .c($0.offset) + c0, lanes: lanes)) } ?? v
    return fold.map { .add(.mul(b, .load($0.base, .c($0.offset) + c0, lanes: lanes)), .load($0.base, .c($0.offset + channels) + c0, lanes: lanes)) } ?? b
  }

  /// conv2d (with relu, max-pool) by Winograd; the epilogue as in `convForward`.
  mutating func winogradForward(_ n: Node, _ a: Conv2DAttrs, tile: WinogradTile, relu: Bool, pool: PoolAttrs?, tail: ConvTail = .none) {
    let xd = dims(n.args[0]), x = at(n.args[0]), w = at("\(n.name).weight"), y = at(n.name)
    let s = WinogradShape.forward(a, x: xd, tile: tile, target: target), scratch = plan.scratch[n.name]!.offset, tmp = scratch + s.forwardFloats
    let bias = a.bias ? at("\(n.name).bias") : nil, fold = foldOperand(n, scaled: a.scaled), groups = xd[0] / s.images
    // Channels-last values (inference, no pool): the copy in reads pixels' channels, the move out writes them.
    let (inputLast, outputLast) = (channelsLast.contains(n.args[0]), channelsLast.contains(n.name))
    precondition(pool == nil || !(inputLast || outputLast), "a pooled Winograd conv is planar")
    func biased(_ v: VExpr, _ c0: IExpr, _ lanes: Int) -> VExpr { Self.biasedVector(v, c0, lanes, bias: bias, fold: fold, channels: s.cout) }
    func relued(_ v: VExpr) -> VExpr { relu ? .selectGreater(v, .zero, v, .zero) : v }
    let plane = s.oh * s.ow, cs = ConvShape(n: xd[0], c: s.cin, h: s.h, w: s.w, f: s.cout, k: 3, oh: s.oh, ow: s.ow, group: s.images)
    let weight: (IExpr, IExpr, Int, Int) -> FExpr = { co, ci, ky, kx in .load(.params, .c(w.offset) + (co * s.cin + ci) * 9 + (ky * 3 + kx)) }
    if pool == nil, let rows = winogradBand(s, groups: groups) {
      return winogradBanded(s, x: x, y: y, images: groups, scratch: scratch, bandRows: rows, layouts: (inputLast, outputLast), weight: weight,
                            tail: tail) { relued(biased($0, $1, $2)) }
    }
    if let pool, Self.poolWindow(pool, cs) == 2 {
      // Each 2x2 tile is one pooling window: its max (the first maximum wins, in row order as in the
      // reference), relu and argmax (the position in the conv plane) straight from the output transform.
      let argmax = at("\(n.name).argmax"), positions = s.tilesPerImage
      winogradConv(s, x: x, groups: groups, scratch: scratch, parts: winogradParts(s, groups: groups), weight: weight, output: { e, j, t, ty, tx, c0, lanes, staging in
        var out: [Stmt] = [], best = VExpr.zero, where_ = VExpr.zero
        for (k, (r, c)) in [(0, 0), (0, 1), (1, 0), (1, 1)].enumerated() {
          let position = VExpr.broadcast(.ofInt((ty * 2 + r) * s.ow + tx * 2 + c))
          let (declared, v) = biased(t[r][c], c0, lanes).declared(as: e.fresh("v"))
          out.append(declared)
          let (b, p) = k == 0 ? (v, position) : (.selectGreater(v, best, v, best), .selectGreater(v, best, position, where_))
          let (bs, bl) = b.declared(as: e.fresh("best")), (ps, pl) = p.declared(as: e.fresh("at"))
          out += [bs, ps]
          (best, where_) = (bl, pl)
        }
        let at = IExpr.c(staging) + (j * positions + ty * s.tilesX + tx) * s.cout + c0
        return out + [.vstore(.arena, at, .selectGreater(best, .zero, best, .zero), lanes: lanes),
                      .vstore(.arena, at + s.images * positions * s.cout, where_, lanes: lanes)]
      }, after: { e, g, staging, range in
        let o = { (j: IExpr, c: IExpr, q: IExpr) in (g * s.images + j) * (s.cout * positions) + c * positions + q }
        return [e.fromChannelsLast(staging, images: s.images, positions: positions, channels: s.cout, range: range) { j, c, q, v in .store(y.base, .c(y.offset) + o(j, c, q), v) },
                e.fromChannelsLast(staging + s.images * positions * s.cout, images: s.images, positions: positions, channels: s.cout, range: range) { j, c, q, v in
                  .store(argmax.base, .c(argmax.offset) + o(j, c, q), v)
                }]
      })
    } else if let pool {
      // Other pools read the conv plane: the tiles fill it in the im2col result's layout, then the same epilogue.
      let epilogue = ConvEpilogue(n: n, s: cs, tmp: tmp, table: tmp, window: 1, pooled: 0, y: y, bias: bias, fold: fold)
      winogradConv(s, x: x, groups: groups, scratch: scratch, weight: weight, output: { _, j, t, ty, tx, c0, lanes, staging in
        Self.stageTile(s, j, t, ty, tx, c0, lanes, staging)
      }, after: { e, g, staging, _ in
        // The pool reads the whole plane: one part.
        [e.fromChannelsLast(staging, images: s.images, positions: plane, channels: s.cout) { j, c, q, v in
          .store(.arena, .c(tmp) + c * (s.images * plane) + j * plane + q, v)
        }, e.poolPlane(epilogue, pool, g: g)]
      })
    } else {
      winogradConv(s, x: x, groups: groups, scratch: scratch, parts: winogradParts(s, groups: groups), inputLast: inputLast, weight: weight,
                   output: { _, j, t, ty, tx, c0, lanes, staging in
        Self.stageTile(s, j, t, ty, tx, c0, lanes, staging) { relued(biased($0, c0, lanes)) }
      }, after: { e, g, staging, range in
        [e.moveOut(s, staging: staging, g: g, images: s.images, to: y, last: outputLast, tail: tail, range: range)]
      })
    }
  }

  /// Moves the staged outputs of images g * images + j (channels-last) to `y` in its layout, the tail applied:
  /// channels-last as contiguous runs, NCHW in blocks of positions; the channels `range` and positions
  /// `positionRange` (first, count), or all.
  mutating func moveOut(_ s: WinogradShape, staging: Int, g: IExpr, images: Int, to y: Placement, last: Bool, tail: ConvTail,
                        range: (IExpr, Int)? = nil, positionRange: (IExpr, Int)? = nil) -> Stmt {
    let plane = s.oh * s.ow
    if last {
      return toChannelsLast(staging, images: images, positions: plane, channels: s.cout, range: range, positionRange: positionRange) { j, c, q, v in
        let o = ((g * images + j) * plane + q) * s.cout + c
        return .store(y.base, .c(y.offset) + o, tail.apply(v, at: o))
      }
    }
    return fromChannelsLast(staging, images: images, positions: plane, channels: s.cout, range: range, positionRange: positionRange) { j, c, q, v in
      let o = (g * images + j) * (s.cout * plane) + c * plane + q
      return .store(y.base, .c(y.offset) + o, tail.apply(v, at: o))
    }
  }

  /// dx = conv(dy, W flipped and transposed) by Winograd: every dx element is one output of one tile.
  mutating func winogradGradInput(_ n: Node, _ a: Conv2DAttrs) {
    let xd = dims(n.args[2]), dy = at(n.args[0]), w = at(n.args[1]), dx = at(n.name)
    let s = WinogradShape.inputGradient(a, x: xd, target: target)
    let plane = s.oh * s.ow
    // W'[c][f][ky][kx] = W[f][c][2 - ky][2 - kx].
    let weight: (IExpr, IExpr, Int, Int) -> FExpr = { co, ci, ky, kx in .load(w.base, .c(w.offset) + (ci * s.cout + co) * 9 + (8 - ky * 3 - kx)) }
    let groups = xd[0] / s.images
    winogradConv(s, x: dy, groups: groups, scratch: plan.scratch[n.name]!.offset, parts: winogradParts(s, groups: groups), weight: weight, output: {
      _, j, t, ty, tx, c0, lanes, staging in Self.stageTile(s, j, t, ty, tx, c0, lanes, staging)
    }, after: { e, g, staging, range in
      [e.fromChannelsLast(staging, images: s.images, positions: plane, channels: s.cout, range: range) { j, c, q, v in
        .store(dx.base, .c(dx.offset) + (g * s.images + j) * (s.cout * plane) + c * plane + q, v)
      }]
    })
  }

  /// dW = G^T [sum over tiles (A dy A^T) . (B^T x B)] G: per group, the input tiles' transform V[xi][tile][c]
  /// and dy's Z[xi][tile][f], then sum[xi][c][f] += V[xi]^T Z[xi] (K = the group's tiles), and after every
  /// group the kernel transform's transpose to dW[f][c][ky][kx]. A step that splits its kernels copies by
  /// channels, transforms by rows of tiles, multiplies by tile positions and transposes by filters.
  mutating func winogradGradWeight(_ n: Node, _ a: Conv2DAttrs) {
    let xd = dims(n.args[1]), dy = at(n.args[0]), x = at(n.args[1]), dw = at(n.name)
    let l = WeightGradientLayout.make(a, x: xd, target: target), s = l.s, q = l.dy
    let padded = plan.scratch[n.name]!.offset, v = padded + s.paddedFloats, dyLast = v + s.transformedFloats
    let z = dyLast + l.dyFloats, sum = z + l.dyTransformFloats
    let macs = xd[0] / s.images * s.tiles * s.tile.positions * s.cin * s.cout
    let copyParts = parallelParts(units: Self.commonDivisor(s.cin, s.cout), macs: macs), rowParts = parallelParts(units: s.tilesY, macs: macs)
    let positionParts = parallelParts(units: s.tile.positions, macs: macs), filterParts = parallelParts(units: s.cout, macs: macs)
    body += [zeroArena(sum, l.sumFloats), zeroArena(padded, s.paddedFloats), zeroArena(dyLast, l.dyFloats)]
    body.append(loop("g", xd[0] / s.images) { e, g in
      var out = e.inParts(copyParts, of: "channels") { e, part in
        [e.copyChannelsLast(s.input, images: s.images, from: x, g: g, into: padded, channels: (part * (s.cin / copyParts), s.cin / copyParts)),
         e.copyChannelsLast(q, images: s.images, from: dy, g: g, into: dyLast, channels: (part * (s.cout / copyParts), s.cout / copyParts))]
      }
      out += e.inParts(rowParts, of: "rows of tiles") { e, part in
        let rows = (part * (s.tilesY / rowParts), s.tilesY / rowParts)
        return [e.transformInput(s, padded: padded, into: v, tileRows: rows), e.transformGradient(s, l, from: dyLast, into: z, tileRows: rows)]
      }
      out += e.inParts(positionParts, of: "tile positions") { e, part in
        let per = s.tile.positions / positionParts
        return [e.loop("xi", per) { e, xv in
          let xi = xv + part * per
          return e.tiledGemm(TiledGemm(m: s.cin, n: s.cout, k: s.tiles, a: (.arena, .c(v) + xi * (s.tiles * s.cin)), aRow: 1, aCol: s.cin,
                                       b: (.arena, .c(z) + xi * (s.tiles * s.cout)), ldb: s.cout,
                                       c: (.arena, .c(sum) + xi * (s.cin * s.cout)), ldc: s.cout, accumulate: true, calls: positionParts))
        }]
      }
      return out
    })
    let gT = Winograd.transposed(s.tile.kernelTransform), per = s.cout / filterParts
    body += inParts(filterParts, of: "filters") { e, part in
      [.scalarLoops([e.loop("f", per) { e, fv in [e.loop("c", s.cin) { e, c in
        let f = fv + part * per
        let m = (0..<4).map { r in (0..<4).map { cc in FExpr.load(.arena, .c(sum + (r * 4 + cc) * s.cin * s.cout) + c * s.cout + f) } }
        var (out, t) = e.transform(gT, m, gT)
        for ky in 0..<3 {
          for kx in 0..<3 { out.append(.store(dw.base, .c(dw.offset) + (f * s.cin + c) * 9 + (ky * 3 + kx), t[ky][kx])) }
        }
        return out
      }] }])]
    }
  }

  /// Z[xi][tile][f] = (A dy A^T)[xi] for dy's 2x2 output tiles (channels-last in `from`), the rows of tiles `tileRows`.
  mutating func transformGradient(_ s: WinogradShape, _ l: WeightGradientLayout, from dyLast: Int, into z: Int, tileRows: (first: IExpr, count: Int)) -> Stmt {
    let q = l.dy
    return loop("j", s.images) { e, j in [e.loop("ty", tileRows.count) { e, vy in
      let ty = vy + tileRows.first
      return [e.loop("tx", s.tilesX) { e, tx in
        e.vectorRuns(s.cout) { e, f0, lanes in
          let d = (0..<2).map { r in (0..<2).map { c in VExpr.load(.arena, .c(dyLast) + q.at(j, ty * 2 + r, tx * 2 + c, f0), lanes: lanes) } }
          let a = Winograd.transposed(s.tile.outputTransform)
          var (out, t) = e.transform(a, d, a)
          let tile = j * s.tilesPerImage + ty * s.tilesX + tx
          for xi in 0..<s.tile.positions {
            out.append(.vstore(.arena, .c(z + xi * s.tiles * s.cout) + tile * s.cout + f0, t[xi / 4][xi % 4], lanes: lanes))
          }
          return out
        }
      }]
    }] }
  }

  /// The greatest common divisor: the units two channel counts split into alike.
  static func commonDivisor(_ a: Int, _ b: Int) -> Int { b == 0 ? a : commonDivisor(b, a % b) }
}
