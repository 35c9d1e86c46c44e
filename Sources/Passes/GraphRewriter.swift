import GraphIR

/// The small graph rewriter the rewriting passes share: who uses each value, and the edits decided so far (nodes
/// replaced, removed or inserted before another, values renamed at every use, operands appended to a node after
/// renaming); `result` applies them all in one pass over the graph, in its order.
struct GraphRewriter {
  let g: Graph
  /// Value name -> the indices of the nodes that read it.
  private(set) var users: [String: [Int]] = [:]
  /// The graph's output and loss: never fused or folded away.
  let protected: Set<String>
  /// Node name -> its replacement (whose operands are renamed like every other's).
  var replace: [String: Node] = [:]
  var remove = Set<String>()
  /// Node name -> nodes that go right before it.
  var insertBefore: [String: [Node]] = [:]
  /// Value -> the value that now holds it, at every use (and as the output or loss).
  var rename: [String: String] = [:]
  /// Node name -> operands appended after renaming (a value that shares a renamed name but is meant as it is).
  var appendArgs: [String: [(name: String, range: SourceRange)]] = [:]

  init(_ g: Graph) {
    self.g = g
    for (i, n) in g.nodes.enumerated() { for a in n.args { users[a, default: []].append(i) } }
    protected = Set([g.output, g.minimize].compactMap { $0 })
  }

  /// The one node that reads `v`, or nil when there are none or several.
  func only(_ v: String) -> Node? {
    guard let u = users[v], u.count == 1 else { return nil }
    return g.nodes[u[0]]
  }

  /// Every node that reads `v`.
  func usersOf(_ v: String) -> [Node] { (users[v] ?? []).map { g.nodes[$0] } }

  /// The graph with the edits made.
  func result() -> Graph {
    var out = g
    out.nodes = []
    for n in g.nodes {
      out.nodes += insertBefore[n.name] ?? []
      if remove.contains(n.name) { continue }
      var m = replace[n.name] ?? n
      m.args = m.args.map { rename[$0] ?? $0 }
      for extra in appendArgs[n.name] ?? [] {
        m.args.append(extra.name)
        m.argRanges.append(extra.range)
      }
      out.nodes.append(m)
    }
    out.output = g.output.map { rename[$0] ?? $0 }
    out.minimize = g.minimize.map { rename[$0] ?? $0 }
    return out
  }
}
