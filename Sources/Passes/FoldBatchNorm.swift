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
/// Training graphs are never folded: their batch norms normalise with batch statistics.
public func foldBatchNorm(_ g: Graph) -> Graph {
  var users: [String: Int] = [:]
  for n in g.nodes { for a in n.args { users[a, default: 0] += 1 } }
  let producers = Dictionary(g.nodes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
  // Producer name -> the batch norm folded into it.
  var folds: [String: Node] = [:]
  for n in g.nodes {
    guard case .batchNorm = n.op, let p = producers[n.args[0]], users[p.name] == 1, p.name != g.output, p.op.definition.batchNormFoldedForm != nil else { continue }
    folds[p.name] = n
  }
  guard !folds.isEmpty else { return g }
  let folded = Set(folds.values.map(\.name))
  var rename: [String: String] = [:]
  for (producer, bn) in folds { rename[bn.name] = producer }
  var out = g
  out.nodes = []
  for n in g.nodes where !folded.contains(n.name) {
    var node = n
    node.args = n.args.map { rename[$0] ?? $0 }
    if let bn = folds[n.name], case .batchNorm(let a) = bn.op, let (op, channels) = n.op.definition.batchNormFoldedForm {
      out.nodes.append(Node(name: bn.name, op: .batchNormFold(BatchNormFoldAttrs(channels: channels, norm: a)), args: [],
                            range: bn.range, opRange: bn.opRange))
      node.op = op
      node.args.append(bn.name)
      node.argRanges.append(bn.range)
    }
    out.nodes.append(node)
  }
  out.output = g.output.map { rename[$0] ?? $0 }
  return out
}
