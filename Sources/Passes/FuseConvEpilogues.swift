import GraphIR

/// Fuses into a forward conv's epilogue, for inference: the activation that is its only reader (`conv2d_act`
/// with `act`), or the add of a residual of its shape that is its only reader, with the activation that is
/// that add's only reader if there is one (`conv2d_act` with `residual: true`). The conv's output, and the
/// add's, are then never stored: an inverted-residual block of MobileNetV2 makes one pass over its expanded
/// activations instead of three.
///
/// The fused node keeps the conv's name (its parameters keep their `state_dict` names) and stands where the
/// last fused node stood, after the residual is computed. A conv whose only reader is a relu is left to
/// `fuseConvReLUPool`, which runs next and may take a pool after the relu too.
///
/// In a training graph only nodes `within` fuse: its frozen part (`Graph.evaluationNodes`), which no gradient reads.
public func fuseConvEpilogues(_ g: Graph, shapes: ShapeTable, within: Set<String>? = nil) -> Graph {
  var r = GraphRewriter(g)
  let fusible = { (name: String) in within?.contains(name) ?? true }
  // Adds and activations already fused: a residual add of two convs is fused into the first only.
  var taken = Set<String>()
  for n in g.nodes where fusible(n.name) {
    guard case .conv2d(let a) = n.op, !r.protected.contains(n.name), let user = r.only(n.name), fusible(user.name), !taken.contains(user.name) else { continue }
    var last = user, residual: (name: String, range: SourceRange)?, activation: Op?
    if case .add = user.op, user.args.count == 2, user.args[0] != user.args[1] {
      let k = user.args[0] == n.name ? 1 : 0
      // A per-channel operand ([N, C, 1, 1]) is a broadcast, not a residual.
      guard shapes[user.args[k]]?.dims == shapes[n.name]?.dims else { continue }
      residual = (user.args[k], user.argRange(k))
      if !r.protected.contains(user.name), let next = r.only(user.name), fusible(next.name), isEpilogueActivation(next.op) {
        (last, activation) = (next, next.op)
      }
    } else if isEpilogueActivation(user.op), user.op != .relu {
      activation = user.op
    } else {
      continue
    }
    var fused = n.replacing(op: .conv2dAct(a, activation: activation, residual: residual != nil))
    if let residual {
      fused.args.append(residual.name)
      fused.argRanges.append(residual.range)
    }
    taken.formUnion([user.name, last.name])
    r.remove.insert(n.name)
    if last.name != user.name { r.remove.insert(user.name) }
    r.replace[last.name] = fused
    r.rename[last.name] = n.name
    if last.name != user.name { r.rename[user.name] = n.name }
  }
  return r.result()
}

/// Whether `op` is an activation a conv epilogue applies (`Conv2DActOp.activations`).
private func isEpilogueActivation(_ op: Op) -> Bool {
  let kind = ObjectIdentifier(type(of: op.definition))
  return Conv2DActOp.activations.contains { ObjectIdentifier($0) == kind }
}
