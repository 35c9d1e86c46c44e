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
    guard !f.r.protected.contains(n.name), let relu = f.r.only(n.name), relu.op == .relu, !f.r.protected.contains(relu.name) else { continue }
    // The fused pool epilogue belongs to the im2col and Winograd kernels, which take dense, undilated convs.
    if let conv, !conv.isDirect, f.fusePool(n, conv, relu) { continue }
    // conv + relu or dense + relu: relu_grad(dy, relu) reads the fused output, which equals relu's.
    let op: Op = conv.map { .conv2dReLU($0) } ?? .denseReLU(dense!)
    f.r.replace[n.name] = n.replacing(op: op)
    f.r.remove.insert(relu.name)
    f.r.rename[relu.name] = n.name
  }
  return f.r.result()
}

/// One fusion pass: the shared rewriter, and the shapes (an unpool needs the conv's output size).
private struct Fusion {
  var r: GraphRewriter
  let shapes: ShapeTable
  init(_ g: Graph, _ shapes: ShapeTable) {
    r = GraphRewriter(g)
    self.shapes = shapes
  }

  /// conv + relu + maxpool, when the relu output feeds a pool whose windows lie inside the conv output (the
  /// fused kernel pools the tiles it computes; not an int8 conv) and, in backward, only the two gradients fused with it;
  /// returns whether it fused.
  mutating func fusePool(_ n: Node, _ conv: Conv2DAttrs, _ relu: Node) -> Bool {
    // An int8 conv's kernel stores its output plane whole (`Emitter.int8Conv`); the pool runs after it.
    guard conv.quantization == nil else { return false }
    let reluUsers = r.usersOf(relu.name)
    guard let pool = reluUsers.first(where: { if case .maxPool = $0.op { true } else { false } }), case .maxPool(let p) = pool.op,
          p.isPlain else { return false }
    let poolGrad = reluUsers.first { if case .maxPoolGrad = $0.op { $0.args[1] == relu.name } else { false } }
    let reluGrad = poolGrad.flatMap { pg in reluUsers.first { $0.op == .reluGrad && $0.args == [pg.name, relu.name] } }
    let forwardOnly = reluUsers.count == 1
    let trainable = reluUsers.count == 3 && poolGrad != nil && reluGrad != nil && r.only(poolGrad!.name)?.name == reluGrad?.name
    guard forwardOnly || trainable else { return false }
    var fused = n.replacing(op: .conv2dReLUMaxPool(conv, p))
    fused.range = pool.range
    r.replace[n.name] = fused
    r.remove.formUnion([relu.name, pool.name])
    r.rename[pool.name] = n.name
    if trainable, let poolGrad, let reluGrad {
      let hw = shapes[n.name]!.dims
      let unpool = UnpoolAttrs(pool: p, height: hw[2], width: hw[3])
      r.remove.insert(poolGrad.name)
      r.replace[reluGrad.name] = Node(name: reluGrad.name, op: .reluMaxPoolGrad(unpool), args: [poolGrad.args[0], n.name, "\(n.name).argmax"])
    }
    return true
  }
}
