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
  var users: [String: [Int]] = [:]
  for (i, n) in g.nodes.enumerated() { for a in n.args { users[a, default: []].append(i) } }
  func only(_ v: String) -> Node? {
    guard let u = users[v], u.count == 1 else { return nil }
    return g.nodes[u[0]]
  }
  func usersOf(_ v: String) -> [Node] { (users[v] ?? []).map { g.nodes[$0] } }
  let protected = Set([g.output, g.minimize].compactMap { $0 })

  var replace: [String: Node] = [:]  // node name -> replacement
  var remove = Set<String>()
  var rename: [String: String] = [:]  // value -> the fused value that now holds it

  for n in g.nodes {
    let conv: Conv2DAttrs?, dense: DenseAttrs?
    switch n.op {
    case .conv2d(let a): (conv, dense) = (a, nil)
    case .dense(let a): (conv, dense) = (nil, a)
    default: continue
    }
    // The pre-activation must feed only the relu (its gradient rules read the conv input, not its output).
    guard !protected.contains(n.name), let relu = only(n.name), relu.op == .relu, !protected.contains(relu.name) else { continue }
    let reluUsers = usersOf(relu.name)
    // conv + relu + maxpool: the relu output feeds the pool and, in backward, only the two grads we fuse.
    if let conv, let pool = reluUsers.first(where: { if case .maxPool = $0.op { true } else { false } }),
       case .maxPool(let p) = pool.op, !protected.contains(relu.name) {
      let poolGrad = reluUsers.first { if case .maxPoolGrad = $0.op { $0.args[1] == relu.name } else { false } }
      let reluGrad = poolGrad.flatMap { pg in reluUsers.first { $0.op == .reluGrad && $0.args == [pg.name, relu.name] } }
      let forwardOnly = reluUsers.count == 1
      let trainable = reluUsers.count == 3 && poolGrad != nil && reluGrad != nil && only(poolGrad!.name)?.name == reluGrad?.name
      if forwardOnly || trainable {
        var fused = n.replacing(op: .conv2dReLUMaxPool(conv, p))
        fused.range = pool.range
        replace[n.name] = fused
        remove.formUnion([relu.name, pool.name])
        rename[pool.name] = n.name
        if trainable, let poolGrad, let reluGrad {
          let hw = shapes[n.name]!.dims
          let unpool = UnpoolAttrs(pool: p, height: hw[2], width: hw[3])
          remove.insert(poolGrad.name)
          replace[reluGrad.name] = Node(name: reluGrad.name, op: .reluMaxPoolGrad(unpool),
                                        args: [poolGrad.args[0], n.name, "\(n.name).argmax"])
        }
        continue
      }
    }
    // conv + relu or dense + relu: relu_grad(dy, relu) reads the fused output, which equals relu's.
    let op: Op = conv.map { .conv2dReLU($0) } ?? .denseReLU(dense!)
    replace[n.name] = n.replacing(op: op)
    remove.insert(relu.name)
    rename[relu.name] = n.name
  }

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
