import GraphIR
import Passes

/// Where every value of a program lives, and the arena size.
public struct MemoryPlan: Equatable, Sendable {
  public var placements: [String: Placement]
  /// Per-node scratch (im2col buffers and the like), live only while the node runs.
  public var scratch: [String: Placement]
  public var arenaFloats: Int
  /// Learnable parameters at the start of params (what gradients and optimiser state cover).
  public var parameterFloats: Int
  /// Buffers after them in params (non-learnable state such as running statistics).
  public var bufferFloats = 0
}

/// Liveness-based buffer reuse into one arena: each value occupies [definition, last use]; a value
/// takes the lowest 64-byte-aligned offset that overlaps no value live at the same time. Parameters,
/// their gradients and the inputs live in their own buffers (buffers after the parameters, outside the
/// optimiser's range). Nothing is allocated inside a step. In training, the batch statistics of stateful
/// ops live to the end, since the runtime reads them after the step.
///
/// The state (parameters, then buffers) is laid out in `state`'s order, by default the program's own: a
/// program lowered from a rewritten graph passes the graph it was written as, so every program of one
/// model shares one layout however its passes moved nodes (`foldBatchNorm` puts a fold before its conv).
public func planMemory(_ g: Graph, _ shapes: ShapeTable, scratch: [String: Int], training: Bool, state: Graph? = nil) -> MemoryPlan {
  var (placements, learnable, paramOffset) = layOutState(state ?? g, shapes)
  for d in g.gradients { placements[d.value] = Placement(base: .grads, offset: placements[d.parameter]!.offset, count: shapes[d.value]!.count) }
  for i in g.inputs { placements[i.name] = Placement(base: i.dtype == .i32 ? .labels : .images, offset: 0, count: shapes[i.name]!.count) }

  let life = Lifetimes(g, training: training)
  struct Interval { var name: String; var start: Int; var end: Int; var count: Int }
  var intervals: [Interval] = []
  for (i, n) in g.nodes.enumerated() {
    let outs = [n.name] + n.op.secondaryOutputs.map { "\(n.name).\($0)" }
    for o in outs where life.root[o] == nil && placements[o] == nil {
      intervals.append(Interval(name: o, start: life.start[o]!, end: life.end[o]!, count: shapes[o]!.count))
    }
    if let s = scratch[n.name], s > 0 { intervals.append(Interval(name: "scratch:\(n.name)", start: i, end: i, count: s)) }
  }
  func align(_ x: Int) -> Int { (x + 15) / 16 * 16 }
  // First fit among the values alive at each start. Intervals come in order of their start, so the values
  // alive are those not yet expired; their free space is kept as sorted holes below the highest end, and
  // expiries come off a heap by end: linear in the graph for chains, where a scan of all placed values
  // made 100,000 statements take seconds.
  var space = FreeSpace()
  var expiries = MinHeap()
  var arena = 0
  var scratchPlacements: [String: Placement] = [:]
  for iv in intervals {
    while let e = expiries.peek, e.end < iv.start {
      expiries.pop()
      space.release(e.offset, e.size)
    }
    let offset = space.take(align(iv.count))
    expiries.push((iv.end, offset, align(iv.count)))
    arena = max(arena, offset + align(iv.count))
    let p = Placement(base: .arena, offset: offset, count: iv.count)
    if iv.name.hasPrefix("scratch:") { scratchPlacements[String(iv.name.dropFirst(8))] = p } else { placements[iv.name] = p }
  }
  for n in g.nodes where life.root[n.name] != nil { placements[n.name] = placements[life.rootOf(n.name)] }
  return MemoryPlan(placements: placements, scratch: scratchPlacements, arenaFloats: max(arena, 16),
                    parameterFloats: learnable, bufferFloats: paramOffset - learnable)
}


/// Each value's alias root (the value whose storage it shares) and lifetime in node indices, [start, end]: the end of
/// the program keeps the outputs alive, and in training the batch statistics the runtime reads after the step.
struct Lifetimes {
  var root: [String: String] = [:]
  var start: [String: Int] = [:], end: [String: Int] = [:]
  func rootOf(_ v: String) -> String { root[v].map(rootOf) ?? v }

  init(_ g: Graph, training: Bool) {
    let last = g.nodes.count
    // A fine-tuning step's frozen part runs as in evaluation (`Graph.evaluationNodes`): no statistics, dropout an alias.
    let evaluation = training ? g.evaluationNodes : []
    for (i, n) in g.nodes.enumerated() {
      if let src = aliasSource(n, training: training && !evaluation.contains(n.name)) { root[n.name] = src }
      for a in n.args { end[rootOf(a)] = max(end[rootOf(a)] ?? i, i) }
      for o in [n.name] + n.op.secondaryOutputs.map({ "\(n.name).\($0)" }) where root[o] == nil {
        start[o] = i
        end[o] = max(end[o] ?? i, i)
      }
    }
    for keep in [g.output, g.minimize].compactMap({ $0 }) { end[rootOf(keep)] = last }
    guard training else { return }
    for n in g.nodes where n.op.definition is any StatefulOp && !evaluation.contains(n.name) {
      for s in n.op.secondaryOutputs { end["\(n.name).\(s)"] = last }
    }
  }
}

/// The params buffer: the learnable parameters in `state_dict` order, then the buffers. Returns their
/// placements, the learnable floats and the total.
func layOutState(_ g: Graph, _ shapes: ShapeTable) -> ([String: Placement], learnable: Int, total: Int) {
  var placements: [String: Placement] = [:], offset = 0, learnable = 0
  for (i, names) in [g.parameterNames, g.bufferNames].enumerated() {
    if i == 1 { learnable = offset }
    for p in names {
      let count = shapes[p]!.count
      placements[p] = Placement(base: .params, offset: offset, count: count)
      offset += count
    }
  }
  return (placements, learnable, offset)
}

/// The free offsets of an arena below the highest value in use: sorted, disjoint holes.
struct FreeSpace {
  private var holes: [(start: Int, end: Int)] = []
  private var top = 0

  /// The lowest offset with `size` free floats, now taken.
  mutating func take(_ size: Int) -> Int {
    if let i = holes.firstIndex(where: { $0.end - $0.start >= size }) {
      let start = holes[i].start
      if holes[i].end - start == size { holes.remove(at: i) } else { holes[i].start += size }
      return start
    }
    // No hole fits: the space ends at the top, after the last hole if it touches the top.
    if let last = holes.last, last.end == top {
      holes.removeLast()
      top = last.start + size
      return last.start
    }
    top += size
    return top - size
  }

  /// Frees [offset, offset + size), merging it with the holes beside it; space at the top lowers the top.
  mutating func release(_ offset: Int, _ size: Int) {
    var lo = offset, hi = offset + size
    var i = holes.partitionPoint { $0.start < lo }
    if i > 0, holes[i - 1].end == lo {
      lo = holes[i - 1].start
      holes.remove(at: i - 1)
      i -= 1
    }
    if i < holes.count, holes[i].start == hi {
      hi = holes[i].end
      holes.remove(at: i)
    }
    if hi == top { top = lo } else { holes.insert((lo, hi), at: i) }
  }
}

extension Array {
  /// The first index whose element fails `belongs` (the array is partitioned by it).
  func partitionPoint(_ belongs: (Element) -> Bool) -> Int {
    var lo = 0, hi = count
    while lo < hi {
      let mid = (lo + hi) / 2
      if belongs(self[mid]) { lo = mid + 1 } else { hi = mid }
    }
    return lo
  }
}

/// A binary min-heap of (end, offset, size), ordered by end then offset so ties expire in a fixed order.
struct MinHeap {
  private var items: [(end: Int, offset: Int, size: Int)] = []
  var peek: (end: Int, offset: Int, size: Int)? { items.first }

  private static func less(_ a: (end: Int, offset: Int, size: Int), _ b: (end: Int, offset: Int, size: Int)) -> Bool {
    (a.end, a.offset) < (b.end, b.offset)
  }

  mutating func push(_ x: (end: Int, offset: Int, size: Int)) {
    items.append(x)
    var i = items.count - 1
    while i > 0, Self.less(items[i], items[(i - 1) / 2]) {
      items.swapAt(i, (i - 1) / 2)
      i = (i - 1) / 2
    }
  }

  mutating func pop() {
    items.swapAt(0, items.count - 1)
    items.removeLast()
    var i = 0
    while true {
      let l = 2 * i + 1, r = l + 1
      var m = i
      if l < items.count, Self.less(items[l], items[m]) { m = l }
      if r < items.count, Self.less(items[r], items[m]) { m = r }
      if m == i { return }
      items.swapAt(i, m)
      i = m
    }
  }
}
