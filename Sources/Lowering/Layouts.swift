import GraphIR
import Passes

/// How a node's inference kernel takes channels-last values: [N, H, W, C] in memory, the channels of each pixel
/// contiguous, so a depthwise conv's vectors run along the channels whatever the plane's size. A value whose
/// planes are one pixel ([N, C, 1, 1]), or that is not 4-D, is the same bytes in either layout: it is neutral
/// and takes part in no rule.
enum LayoutRule: Equatable {
  /// Every operand and the result in NCHW: the default of a kernel written for planes.
  case planar
  /// The operands at these positions and the result share one layout, either (elementwise passes, products with
  /// a per-channel gate, a depthwise conv); the node's other operands are neutral. `gains`: the reason to be
  /// channels-last at all (a depthwise conv, whose NCHW kernel runs short rows at a fraction of its lanes).
  case shared([Int], gains: Bool)
  /// A conv as a GEMM whose vectors run along the filters, its rows the output pixels: operand 0 read in either
  /// layout (`inputEither`) or NCHW only; a `residual` operand in the result's layout; a channels-last input only
  /// with a channels-last result. `gains`: a reason to be channels-last (a conv whose NCHW kernel moves its values
  /// through channels-last copies, or runs its GEMM along short planes).
  case gemm(inputEither: Bool, residual: Int?, gains: Bool)
  /// Operand 0 read in either layout, the result neutral (a global average pool).
  case reduction
}

/// The values an inference program keeps channels-last: the largest set every kernel around it can take (each
/// node's `LayoutRule`), kept only in connected groups that hold a kernel that gains by it (a depthwise conv, a
/// conv lowered as a GEMM along its filters). The graph's input and output stay NCHW, as users give and read them,
/// and no reorder is placed: a group's edges are convs that read NCHW and write channels-last, and neutral values.
/// `within`, when given, are the only nodes that may take channels-last values (a fine-tuning step's frozen part,
/// lowered as inference is); every other node reads and writes NCHW.
func chooseChannelsLast(_ g: Graph, _ shapes: ShapeTable, target: Target, within: Set<String>? = nil) -> Set<String> {
  func neutral(_ v: String) -> Bool {
    guard let d = shapes[v]?.dims, d.count == 4 else { return true }
    return d[2] * d[3] == 1
  }
  let rules = g.nodes.map { n in
    within.map { $0.contains(n.name) } ?? true ? (n.op.definition as? any Lowerable)?.layoutRule(n, shapes, target) ?? .planar : .planar
  }
  var last = Set(zip(g.nodes, rules).compactMap { n, rule -> String? in
    switch rule {
    case .shared, .gemm: neutral(n.name) ? nil : n.name
    case .planar, .reduction: nil
    }
  })
  if let out = g.output { last.remove(out) }
  // Members that must agree, and the operands the rule lets be channels-last, for each node.
  func members(_ n: Node, _ rule: LayoutRule) -> (agree: [String], allowed: Set<Int>) {
    switch rule {
    case .planar: ([], [])
    case .shared(let ps, _): ([n.name] + ps.map { n.args[$0] }, Set(ps))
    case .gemm(_, let r, _): ([n.name] + (r.map { [n.args[$0]] } ?? []), Set([0] + (r.map { [$0] } ?? [])))
    case .reduction: ([], [0])
    }
  }
  // Removal only ever turns a value NCHW, so this reaches the largest consistent set.
  var changed = true
  while changed {
    changed = false
    func drop(_ v: String) { if last.remove(v) != nil { changed = true } }
    for (n, rule) in zip(g.nodes, rules) {
      let (agree, allowed) = members(n, rule)
      if rule == .planar { drop(n.name) }
      for (i, a) in n.args.enumerated() where !allowed.contains(i) { drop(a) }
      let deciding = agree.filter { !neutral($0) }
      if deciding.contains(where: { !last.contains($0) }) { deciding.forEach(drop) }
      if case .gemm(let either, _, _) = rule {
        if !either || !last.contains(n.name) { drop(n.args[0]) }
      }
    }
  }
  return keptGroups(of: last, g, rules, members: members, neutral: neutral)
}

/// The values of `last` in connected groups (values that must agree, a GEMM conv's input and result) that hold
/// a kernel that gains by being channels-last.
private func keptGroups(of last: Set<String>, _ g: Graph, _ rules: [LayoutRule], members: (Node, LayoutRule) -> (agree: [String], allowed: Set<Int>),
                        neutral: (String) -> Bool) -> Set<String> {
  var parent: [String: String] = [:]
  func root(_ v: String) -> String {
    var r = v
    while let p = parent[r], p != r { r = p }
    return r
  }
  func join(_ a: String, _ b: String) {
    guard last.contains(a), last.contains(b) else { return }
    let (ra, rb) = (root(a), root(b))
    if ra != rb { parent[ra] = rb }
  }
  var gaining: [String] = []
  for (n, rule) in zip(g.nodes, rules) {
    let agree = members(n, rule).agree.filter { !neutral($0) }
    for v in agree.dropFirst() { join(agree[0], v) }
    if case .gemm(true, _, _) = rule { join(n.name, n.args[0]) }
    if case .shared(_, true) = rule, last.contains(n.name) { gaining.append(n.name) }
    if case .gemm(_, _, true) = rule, last.contains(n.name) { gaining.append(n.name) }
  }
  let kept = Set(gaining.map(root))
  return last.filter { kept.contains(root($0)) }
}
