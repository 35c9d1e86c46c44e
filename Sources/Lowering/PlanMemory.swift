import GraphIR
import Passes

/// Where every value of a program lives, and the arena size.
public struct MemoryPlan: Equatable, Sendable {
  public var placements: [String: Placement]
  /// Per-node scratch (im2col buffers and the like), live only while the node runs.
  public var scratch: [String: Placement]
  public var arenaFloats: Int
  public var parameterFloats: Int
}

/// Values that share their operand's storage: flatten and its gradient are views; dropout is the
/// identity at inference.
func aliasSource(_ n: Node, training: Bool) -> String? {
  switch n.op {
  case .flatten: n.args[0]
  case .flattenGrad: n.args[0]
  case .dropout: training ? nil : n.args[0]
  default: nil
  }
}

/// Liveness-based buffer reuse into one arena: each value occupies [definition, last use]; a value
/// takes the lowest 64-byte-aligned offset that overlaps no value live at the same time. Parameters,
/// their gradients and the inputs live in their own buffers. Nothing is allocated inside a step.
public func planMemory(_ g: Graph, _ shapes: ShapeTable, scratch: [String: Int], training: Bool) -> MemoryPlan {
  var placements: [String: Placement] = [:]
  var paramOffset = 0
  for p in g.parameterNames {
    let count = shapes[p]!.count
    placements[p] = Placement(base: .params, offset: paramOffset, count: count)
    paramOffset += count
  }
  for d in g.gradients { placements[d.value] = Placement(base: .grads, offset: placements[d.parameter]!.offset, count: shapes[d.value]!.count) }
  for i in g.inputs { placements[i.name] = Placement(base: i.dtype == .i32 ? .labels : .images, offset: 0, count: shapes[i.name]!.count) }

  // Alias roots and lifetimes (in node indices; the end of the program keeps outputs alive).
  var root: [String: String] = [:]
  func rootOf(_ v: String) -> String { root[v].map(rootOf) ?? v }
  var start: [String: Int] = [:], end: [String: Int] = [:]
  let last = g.nodes.count
  for (i, n) in g.nodes.enumerated() {
    if let src = aliasSource(n, training: training) { root[n.name] = src }
    for a in n.args { end[rootOf(a)] = max(end[rootOf(a)] ?? i, i) }
    let outs = [n.name] + n.op.secondaryOutputs.map { "\(n.name).\($0)" }
    for o in outs where root[o] == nil {
      start[o] = i
      end[o] = max(end[o] ?? i, i)
    }
  }
  for keep in [g.output, g.minimize].compactMap({ $0 }) { end[rootOf(keep)] = last }

  struct Interval { var name: String; var start: Int; var end: Int; var count: Int }
  var intervals: [Interval] = []
  for (i, n) in g.nodes.enumerated() {
    let outs = [n.name] + n.op.secondaryOutputs.map { "\(n.name).\($0)" }
    for o in outs where root[o] == nil && placements[o] == nil {
      intervals.append(Interval(name: o, start: start[o]!, end: end[o]!, count: shapes[o]!.count))
    }
    if let s = scratch[n.name], s > 0 { intervals.append(Interval(name: "scratch:\(n.name)", start: i, end: i, count: s)) }
  }
  func align(_ x: Int) -> Int { (x + 15) / 16 * 16 }
  var placed: [(Interval, Int)] = []
  var arena = 0
  var scratchPlacements: [String: Placement] = [:]
  for iv in intervals {
    let busy = placed.filter { $0.0.start <= iv.end && iv.start <= $0.0.end }.map { ($0.1, $0.1 + align($0.0.count)) }.sorted { $0.0 < $1.0 }
    var offset = 0
    for (lo, hi) in busy {
      if offset + align(iv.count) <= lo { break }
      offset = max(offset, hi)
    }
    placed.append((iv, offset))
    arena = max(arena, offset + align(iv.count))
    let p = Placement(base: .arena, offset: offset, count: iv.count)
    if iv.name.hasPrefix("scratch:") { scratchPlacements[String(iv.name.dropFirst(8))] = p } else { placements[iv.name] = p }
  }
  for n in g.nodes where root[n.name] != nil { placements[n.name] = placements[rootOf(n.name)] }
  return MemoryPlan(placements: placements, scratch: scratchPlacements, arenaFloats: max(arena, 16), parameterFloats: paramOffset)
}

