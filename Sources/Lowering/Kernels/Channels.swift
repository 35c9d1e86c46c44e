import GraphIR
import Passes

/// Channel concatenation (per image, each operand's block copied to its place in the output), the slices of its
/// gradient, and products with a per-channel gate.
extension Emitter {
  /// Per image b, `block` floats from src[b * srcStride + srcOffset ...] to dst[b * dstStride + dstOffset ...]:
  /// contiguous runs, which the back ends vectorise.
  mutating func copyBlocks(images: Int, block: Int, from src: Placement, _ srcOffset: Int, stride srcStride: Int,
                           to dst: Placement, _ dstOffset: Int, stride dstStride: Int) -> Stmt {
    loop("b", images) { e, b in [e.loop("i", block) { _, i in
      [.store(dst.base, .c(dst.offset + dstOffset) + b * dstStride + i, .load(src.base, .c(src.offset + srcOffset) + b * srcStride + i))]
    }] }
  }

  /// Per pixel of channels-last values of `dims` (the pixels' count from it), `count` channels from channel
  /// `srcFirst` of src's `srcC` to channel `dstFirst` of dst's `dstC`: contiguous runs the back ends vectorise.
  mutating func copyChannels(_ dims: [Int], count: Int, from src: Placement, _ srcFirst: Int, of srcC: Int,
                             to dst: Placement, _ dstFirst: Int, of dstC: Int) -> [Stmt] {
    let pixels = dims[0] * dims.dropFirst(2).reduce(1, *)
    return planeLoop("q", pixels, work: pixels * count * Self.elementwiseWeight) { e, q in
      [e.loop("c", count) { _, c in
        [.store(dst.base, .c(dst.offset + dstFirst) + q * dstC + c, .load(src.base, .c(src.offset + srcFirst) + q * srcC + c))]
      }]
    }
  }

  /// out = a * b (or `combine(a, b)`), where one operand may be a per-channel gate [N, C, 1, 1] read once per plane
  /// of the other: per plane, explicit vectors along it (the gate broadcast), which the back ends' own vectorisers
  /// did not form for the gate's per-plane reads.
  mutating func gatedProduct(_ out: String, _ a: String, _ b: String, _ combine: (VExpr, VExpr) -> VExpr = VExpr.mul) {
    let y = at(out), count = dims(out).reduce(1, *)
    let pa = at(a), pb = at(b), na = dims(a).reduce(1, *), nb = dims(b).reduce(1, *)
    let plane = count / min(na, nb)
    if plane > 1, channelsLast.contains(out) { return gatedProductChannelsLast(out, a, b, combine) }
    func read(_ p: Placement, full: Bool, _ q: IExpr, _ first: IExpr, _ lanes: Int) -> VExpr {
      full ? .load(p.base, .c(p.offset) + q * plane + first, lanes: lanes) : .broadcast(.load(p.base, .c(p.offset) + q))
    }
    body += planeLoop("q", count / plane, work: count * Self.elementwiseWeight) { e, q in
      e.vectorRuns(plane) { _, first, lanes in
        [.vstore(y.base, .c(y.offset) + q * plane + first, combine(read(pa, full: na == count, q, first, lanes), read(pb, full: nb == count, q, first, lanes)),
                 lanes: lanes)]
      }
    }
  }
}

extension Emitter {
  /// `gatedProduct` on a channels-last value: per pixel, vectors along its channels against the gate's vectors.
  mutating func gatedProductChannelsLast(_ out: String, _ a: String, _ b: String, _ combine: (VExpr, VExpr) -> VExpr) {
    let y = at(out), d = dims(out), count = d.reduce(1, *), (c, hw) = (d[1], d[2] * d[3])
    let pa = at(a), pb = at(b), na = dims(a).reduce(1, *), nb = dims(b).reduce(1, *)
    func read(_ p: Placement, full: Bool, _ q: IExpr, _ first: IExpr, _ lanes: Int) -> VExpr {
      .load(p.base, .c(p.offset) + (full ? q : .div(q, hw)) * c + first, lanes: lanes)
    }
    body += planeLoop("q", count / c, work: count * Self.elementwiseWeight) { e, q in
      e.vectorRuns(c) { _, first, lanes in
        [.vstore(y.base, .c(y.offset) + q * c + first, combine(read(pa, full: na == count, q, first, lanes), read(pb, full: nb == count, q, first, lanes)),
                 lanes: lanes)]
      }
    }
  }

  /// out[q] = the sum, in order, of `term(i)` over plane q (elements q * plane ..< (q + 1) * plane), for `count`
  /// planes: a per-channel operand's gradient.
  mutating func planeSums(into out: Placement, count: Int, plane: Int, _ term: @escaping (IExpr) -> FExpr) {
    body.append(loop("q", count) { e, q in
      let acc = e.fresh("acc")
      return [.local(acc, .c(0)), e.loop("j", plane) { _, j in [.set(acc, .local(acc) + term(q * plane + j))] },
              .store(out.base, .c(out.offset) + q, .local(acc))]
    })
  }
}

extension ConcatOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let y = e.at(n.name), yd = e.dims(n.name), total = yd.dropFirst().reduce(1, *)
    if e.channelsLast.contains(n.name) {
      var first = 0
      for a in n.args {
        let count = e.dims(a)[1]
        e.body += e.copyChannels(yd, count: count, from: e.at(a), 0, of: count, to: y, first, of: yd[1])
        first += count
      }
      return
    }
    var offset = 0
    for a in n.args {
      let block = e.dims(a).dropFirst().reduce(1, *)
      let copy = e.copyBlocks(images: yd[0], block: block, from: e.at(a), 0, stride: block, to: y, offset, stride: total)
      e.body.append(copy)
      offset += block
    }
  }
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule { .shared(Array(n.args.indices), gains: false) }
}

extension ConcatGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let dy = e.at(n.args[0]), dd = e.dims(n.args[0]), total = dd.dropFirst().reduce(1, *)
    let offset = n.args[1..<(part + 1)].map { e.dims($0).dropFirst().reduce(1, *) }.reduce(0, +)
    let block = e.dims(n.name).dropFirst().reduce(1, *)
    let copy = e.copyBlocks(images: dd[0], block: block, from: dy, offset, stride: total, to: e.at(n.name), 0, stride: block)
    e.body.append(copy)
  }
}

extension MulOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.gatedProduct(n.name, n.args[0], n.args[1]) }
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule { .shared([0, 1], gains: false) }
}

extension MulGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let count = e.dims(n.name).reduce(1, *), full = e.dims(n.args[0]).reduce(1, *)
    guard count < full else { return e.gatedProduct(n.name, n.args[0], n.args[1]) }
    // The gate's gradient: the sum over each plane of dy * other, in order (as the reference kernel).
    let dy = e.at(n.args[0]), other = e.at(n.args[1])
    e.planeSums(into: e.at(n.name), count: count, plane: full / count) { .load(dy.base, .c(dy.offset) + $0) * .load(other.base, .c(other.offset) + $0) }
  }
}

extension AddGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let count = e.dims(n.name).reduce(1, *), full = e.dims(n.args[0]).reduce(1, *)
    let dy = e.at(n.args[0]), dx = e.at(n.name), plane = full / count
    guard count < full else {
      return e.body.append(e.copyBlocks(images: 1, block: count, from: dy, 0, stride: 0, to: dx, 0, stride: 0))
    }
    // The sum over each plane of dy, in order (as the reference kernel).
    e.planeSums(into: dx, count: count, plane: plane) { .load(dy.base, .c(dy.offset) + $0) }
  }
}

extension ChunkOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let xd = e.dims(n.args[0]), total = xd.dropFirst().reduce(1, *), block = total / chunks
    if e.channelsLast.contains(n.name) {
      let count = xd[1] / chunks
      e.body += e.copyChannels(xd, count: count, from: e.at(n.args[0]), index * count, of: xd[1], to: e.at(n.name), 0, of: count)
      return
    }
    let copy = e.copyBlocks(images: xd[0], block: block, from: e.at(n.args[0]), index * block, stride: total, to: e.at(n.name), 0, stride: block)
    e.body.append(copy)
  }
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule { .shared([0], gains: false) }
}

extension ChunkGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) {
    let xd = e.dims(n.args[1]), total = xd.dropFirst().reduce(1, *), block = total / chunks, dx = e.at(n.name)
    e.body.append(e.zero(dx))
    let copy = e.copyBlocks(images: xd[0], block: block, from: e.at(n.args[0]), 0, stride: block, to: dx, index * block, stride: total)
    e.body.append(copy)
  }
}

extension Emitter {
  /// Each output plane copied from its shuffled source plane (`Channels.shuffledSource`: output channel
  /// j * rows + i reads input channel i * cols + j), one image at a time, in loops over i and j rather than one
  /// copy per channel (hundreds in ShuffleNet's late stages, which made its kernels slow to compile).
  mutating func shuffleChannels(_ n: Node, groups: Int, inverse: Bool) {
    let xd = dims(n.args[0]), x = at(n.args[0]), y = at(n.name)
    let c = xd[1], plane = xd.dropFirst(2).reduce(1, *)
    let (rows, cols) = inverse ? (c / groups, groups) : (groups, c / groups)
    if channelsLast.contains(n.name) {
      // Per pixel, output channel j * rows + i is input channel i * cols + j: the rows' stores interleave.
      body += planeLoop("q", xd[0] * plane, work: xd.reduce(1, *) * Self.elementwiseWeight) { e, q in
        [e.loop("j", cols) { _, j in (0..<rows).map { i in
          .store(y.base, .c(y.offset) + q * c + j * rows + .c(i), .load(x.base, .c(x.offset) + q * c + .c(i * cols) + j))
        } }]
      }
      return
    }
    body.append(loop("b", xd[0]) { e, b in [e.loop("i", rows) { e, i in [e.loop("j", cols) { e, j in [e.loop("p", plane) { _, p in
      [.store(y.base, .c(y.offset) + b * (c * plane) + j * (rows * plane) + i * plane + p,
              .load(x.base, .c(x.offset) + b * (c * plane) + i * (cols * plane) + j * plane + p))]
    }] }] }] })
  }
}

extension ChannelShuffleOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.shuffleChannels(n, groups: groups, inverse: false) }
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule { .shared([0], gains: false) }
}

extension ChannelShuffleGradOp: Lowerable {
  func lower(_ n: Node, _ e: inout Emitter) { e.shuffleChannels(n, groups: groups, inverse: true) }
}
