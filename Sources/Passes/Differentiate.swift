import GraphIR

/// Derives the backward graph symbolically: forward nodes, then the gradient nodes that the op
/// rules emit in reverse order, with `gradient PARAM = VALUE` declarations for every parameter.
///
/// Only needed gradients are built: a value gets one when it depends on a trained parameter and reaches the
/// loss (so there is no input gradient for the first conv). A value with several consumers sums
/// their contributions with explicit `add` nodes. Frozen parameters (`Graph.frozen`) get no gradient: backward
/// stops where the trained ones begin, and nodes that only fed a frozen parameter's gradient are dropped.
public func differentiate(_ g: Graph) throws(DiagnosticList) -> Graph {
  guard let loss = g.minimize else {
    throw DiagnosticList([.error("the graph has no 'minimize' statement; training needs a scalar loss to minimise", at: .synthesized)])
  }
  // Only forward ops have gradient rules; a backward or fused op means the graph was differentiated (or
  // fused) already, and each is named where it is written.
  let rules = g.nodes.map { $0.op.definition as? any ForwardOp }
  let without = zip(g.nodes, rules).filter { $1 == nil }.map(\.0)
  guard without.isEmpty else {
    throw DiagnosticList(without.map { n in
      .error("'\(n.name)' is \(n.op.spelling), a compiler-formed op with no gradient rule: differentiation takes a graph of forward ops",
             at: n.opRange)
    })
  }
  // Forward: which values depend on a trained parameter.
  let dependsOnParameter = g.trainedValues
  // Backward: which values reach the loss.
  var reachesLoss: Set<String> = [loss]
  for n in g.nodes.reversed() where reachesLoss.contains(n.name) { reachesLoss.formUnion(n.args) }

  // Shapes for the rules that broadcast (a gate's gradient is summed over its planes; an operand of the full
  // shape takes dy as it is).
  let shapes = try inferShapes(g, batch: 1)
  var builder = GradientBuilder(taken: Set(g.inputs.map(\.name) + g.nodes.map(\.name)), dims: shapes.types.mapValues(\.dims))
  var contributions: [String: [String]] = [:]
  for (n, rule) in zip(g.nodes, rules).reversed() where reachesLoss.contains(n.name) && dependsOnParameter.contains(n.name) {
    var dy = ""
    if n.name != loss {
      guard var parts = contributions[n.name], !parts.isEmpty else { continue }
      dy = parts.removeFirst()
      for p in parts { dy = builder.emit("\(n.name)_grad_sum", .add, [dy, p]) }
    }
    let wants = n.args.map { dependsOnParameter.contains($0) && reachesLoss.contains($0) }
    let grads = rule!.gradient(n, dy: dy, wants: wants, &builder)
    for (arg, grad) in zip(n.args, grads) {
      if let grad { contributions[arg, default: []].append(grad) }
    }
  }
  // A rule emits its parameters' gradients whatever they are; a frozen one's is dropped with what only it needed.
  let gradients = builder.parameterGradients.filter { !g.frozen.contains($0.parameter) }
  var needed = Set(gradients.map(\.value))
  var backward: [Node] = []
  for n in builder.nodes.reversed() where needed.contains(n.name) {
    backward.append(n)
    needed.formUnion(n.args)
  }
  var out = g
  out.nodes += backward.reversed()
  out.gradients = gradients
  return out
}
