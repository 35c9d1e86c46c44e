import GraphIR

/// Derives the backward graph symbolically: forward nodes, then the gradient nodes that the op
/// rules emit in reverse order, with `gradient PARAM = VALUE` declarations for every parameter.
///
/// Only needed gradients are built: a value gets one when it depends on a parameter and reaches the
/// loss (so there is no input gradient for the first conv). A value with several consumers sums
/// their contributions with explicit `add` nodes.
public func differentiate(_ g: Graph) throws(DiagnosticList) -> Graph {
  guard let loss = g.minimize else {
    throw DiagnosticList([.error("the graph has no 'minimize' statement; training needs a scalar loss to minimise", at: .synthesized)])
  }
  guard !g.nodes.contains(where: { $0.op.isGradient }) else {
    throw DiagnosticList([.error("the graph is already differentiated", at: .synthesized)])
  }
  // Forward: which values depend on a parameter.
  var dependsOnParameter = Set<String>()
  for n in g.nodes where !n.op.parameterSuffixes.isEmpty || n.args.contains(where: dependsOnParameter.contains) {
    dependsOnParameter.insert(n.name)
  }
  // Backward: which values reach the loss.
  var reachesLoss: Set<String> = [loss]
  for n in g.nodes.reversed() where reachesLoss.contains(n.name) { reachesLoss.formUnion(n.args) }

  var builder = GradientBuilder(taken: Set(g.inputs.map(\.name) + g.nodes.map(\.name)))
  var contributions: [String: [String]] = [:]
  for n in g.nodes.reversed() where reachesLoss.contains(n.name) && dependsOnParameter.contains(n.name) {
    var dy = ""
    if n.name != loss {
      guard var parts = contributions[n.name], !parts.isEmpty else { continue }
      dy = parts.removeFirst()
      for p in parts { dy = builder.emit("\(n.name)_grad_sum", .add, [dy, p]) }
    }
    let wants = n.args.map { dependsOnParameter.contains($0) && reachesLoss.contains($0) }
    let grads = n.op.gradient(n, dy: dy, wants: wants, &builder)
    for (arg, grad) in zip(n.args, grads) {
      if let grad { contributions[arg, default: []].append(grad) }
    }
  }
  var out = g
  out.nodes += builder.nodes
  out.gradients = builder.parameterGradients
  return out
}
