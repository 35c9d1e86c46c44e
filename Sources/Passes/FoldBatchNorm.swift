import GraphIR

/// Folds each batch norm of an inference graph into the conv2d or dense that feeds it.
///
/// In inference a batch norm is a per-channel affine map of its input, y * scale + shift, from its
/// parameters and running statistics. `bn = batchnorm(c)`, where `c = conv2d(x)` or `dense(x)` feeds
/// only the batch norm, becomes `bn = batchnorm_fold(channels: C)` (the [2, C] scale and shift, computed
/// once per call from the same state under the same names) and `c = conv2d(x, bn, scaled: true)`,
/// whose epilogue applies it; the batch norm's users read `c`. The normalisation then costs no pass
/// over the activations, and the conv fuses with a relu and pool after it. The fold node moves before
/// the conv it feeds; the state layout is the source graph's, so node order does not change it.
/// In a training graph only the batch norms `within` fold: those of its frozen part (`Graph.evaluationNodes`); the
/// others normalise with batch statistics.
public func foldBatchNorm(_ g: Graph, within: Set<String>? = nil) -> Graph {
  var r = GraphRewriter(g)
  let producers = Dictionary(g.nodes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
  for n in g.nodes where within?.contains(n.name) ?? true {
    guard case .batchNorm(let a) = n.op, let p = producers[n.args[0]], r.only(p.name) != nil, p.name != g.output,
          let (op, channels) = p.op.definition.batchNormFoldedForm else { continue }
    r.insertBefore[p.name] = [Node(name: n.name, op: .batchNormFold(BatchNormFoldAttrs(channels: channels, norm: a)), args: [],
                                   range: n.range, opRange: n.opRange)]
    r.replace[p.name] = p.replacing(op: op)
    r.appendArgs[p.name] = [(n.name, n.range)]
    r.remove.insert(n.name)
    r.rename[n.name] = p.name
  }
  return r.result()
}
