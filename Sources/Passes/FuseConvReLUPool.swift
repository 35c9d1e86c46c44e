import GraphIR

/// Fuses conv2d + relu + maxpool into `conv2d_relu_maxpool` (forward) and the matching
/// maxpool_grad + relu_grad pair into `relu_maxpool_grad` (backward); also conv2d + relu and
/// dense + relu where no pool follows.
///
/// Runs after `differentiate`, on the forward and backward program together: the gradient rules stay
/// written once, for the plain ops, and fusion only has to keep what backward reads. The fused
/// forward stores just the pooled output plus the argmax of each window; relu's mask is implied by
/// the pooled value being positive, so the full-resolution conv and relu outputs are never stored.
/// The fused node takes the conv's name, so its parameters keep their `state_dict` names.
public func fuseConvReLUPool(_ g: Graph, shapes: ShapeTable) -> Graph {
  var f = Fusion(g, shapes)
  for n in g.nodes {
    // Only convolutions and dense layers start a fusion.
    let conv: Conv2DAttrs?, dense: DenseAttrs?
    if case .conv2d(let a) = n.op {
      (conv, dense) = (a, nil)
    } else if case .dense(let a) = n.op {
      (conv, dense) = (nil, a)
    } else {
      continue
    }
    // The pre-activation must feed only the relu (its gradient rules read the conv input, not its output).
    guard !f.protected.contains(n.name), let relu = f.only(n.name), relu.op == .relu, !f.protected.contains(relu.name) else { continue }
    if let conv, f.fusePool(n, conv, relu) { continue }
    // conv + relu or dense + relu: relu_grad(dy, relu) reads the fused output, which equals relu's.
    let op: Op = conv.map { .conv2dReLU($0) } ?? .denseReLU(dense!)
    f.replace[n.name] = n.replacing(op: op)
    f.remove.insert(relu.name)
    f.rename[relu.name] = n.name
  }
  return f.result()
}

/// The state of one fusion pass: who uses each value, and the replacements, removals and renames so far.
private struct Fusion {
  let g: Graph, shapes: ShapeTable
  var users: [String: [Int]] = [:]
  let protected: Set<String>
  var replace: [String: Node] = [:]  // node name -> replacement
  var remove = Set<String>()
  var rename: [String: String] = [:]  // value -> the fused value that now holds it

  init(_ g: Graph, _ shapes: ShapeTable) {
    (self.g, self.shapes) = (g, shapes)
    for (i, n) in g.nodes.enumerated() { for a in n.args { users[a, default: []].append(i) } }
    protected = Set([g.output, g.minimize].compactMap { $0 })
  }

  func only(_ v: String) -> Node? {
    guard let u = users[v], u.count == 1 else { return nil }
    return g.nodes[u[0]]
  }
  func usersOf(_ v: String) -> [Node] { (users[v] ?? []).map { g.nodes[$0] } }

  /// conv + relu + maxpool, when the relu output feeds the pool and, in backward, only the two gradients
  /// fused with it; returns whether it fused.
  mutating func fusePool(_ n: Node, _ conv: Conv2DAttrs, _ relu: Node) -> Bool {
    let reluUsers = usersOf(relu.name)
    guard let pool = reluUsers.first(where: { if case .maxPool = $0.op { true } else { false } }), case .maxPool(let p) = pool.op else { return false }
    let poolGrad = reluUsers.first { if case .maxPoolGrad = $0.op { $0.args[1] == relu.name } else { false } }
    let reluGrad = poolGrad.flatMap { pg in reluUsers.first { $0.op == .reluGrad && $0.args == [pg.name, relu.name] } }
    let forwardOnly = reluUsers.count == 1
    let trainable = reluUsers.count == 3 && poolGrad != nil && reluGrad != nil && only(poolGrad!.name)?.name == reluGrad?.name
    guard forwardOnly || trainable else { return false }
    var fused = n.replacing(op: .conv2dReLUMaxPool(conv, p))
    fused.range = pool.range
    replace[n.name] = fused
    remove.formUnion([relu.name, pool.name])
    rename[pool.name] = n.name
    if trainable, let poolGrad, let reluGrad {
      let hw = shapes[n.name]!.dims
      let unpool = UnpoolAttrs(pool: p, height: hw[2], width: hw[3])
      remove.insert(poolGrad.name)
      replace[reluGrad.name] = Node(name: reluGrad.name, op: .reluMaxPoolGrad(unpool), args: [poolGrad.args[0], n.name, "\(n.name).argmax"])
    }
    return true
  }

  /// The graph with the replacements made, the removed nodes gone and every use renamed.
  func result() -> Graph {
    var out = g
    out.nodes = g.nodes.compactMap { n in
      if remove.contains(n.name) { return nil }
      var m = replace[n.name] ?? n
      m.args = m.args.map { rename[$0] ?? $0 }
      return m
    }
    // A fused-away pool may be the graph's output (a feature extractor): the fused value now holds it.
    out.output = g.output.map { rename[$0] ?? $0 }
    out.minimize = g.minimize.map { rename[$0] ?? $0 }
    return out
  }
}
