/// Checks the structural invariants every pass must keep: single assignment, definition before use,
/// operand counts, existing parameters, and a defined output, loss and gradients.
public enum Verifier {
  public static func verify(_ g: Graph) throws(DiagnosticList) {
    var errors: [Diagnostic] = []
    var defined = Set(g.inputs.map(\.name))
    var params = Set<String>()
    func fail(_ m: String, _ r: SourceRange) { errors.append(.error("verifier: \(m)", at: r)) }
    if defined.count != g.inputs.count { fail("duplicate input names", .synthesized) }
    for n in g.nodes {
      if n.args.count != n.op.arity { fail("'\(n.name)' has \(n.args.count) operands; \(n.op.spelling) takes \(n.op.arity)", n.range) }
      for a in n.args where !defined.contains(a) && !params.contains(a) {
        fail("'\(n.name)' uses '\(a)' before it is defined", n.range)
      }
      if !defined.insert(n.name).inserted { fail("'\(n.name)' is defined twice", n.range) }
      for s in n.op.parameterSuffixes { params.insert("\(n.name).\(s)") }
      for s in n.op.bufferSuffixes { defined.insert("\(n.name).\(s)") }
      for s in n.op.secondaryOutputs { defined.insert("\(n.name).\(s)") }
    }
    errors += dialectInvariants(g)
    if let o = g.output, !defined.contains(o) { fail("output '\(o)' is not defined", .synthesized) }
    if g.output == nil { fail("no output", .synthesized) }
    if let m = g.minimize, !defined.contains(m) { fail("minimised value '\(m)' is not defined", .synthesized) }
    for d in g.gradients {
      if !params.contains(d.parameter) { fail("gradient of unknown parameter '\(d.parameter)'", .synthesized) }
      if !defined.contains(d.value) { fail("gradient value '\(d.value)' is not defined", .synthesized) }
    }
    if !errors.isEmpty { throw DiagnosticList(errors) }
  }
}

extension Verifier {
  /// What the backward and fused ops assume of their operands, which differentiation and fusion guarantee and
  /// a hand-written IR file might not: `relu_maxpool_grad` reads the argmax its `conv2d_relu_maxpool` saved,
  /// and `dropout_grad` recomputes the mask of the `dropout` that produced its second operand.
  static func dialectInvariants(_ g: Graph) -> [Diagnostic] {
    var producer: [String: Op] = [:]
    var errors: [Diagnostic] = []
    for n in g.nodes where n.args.count == n.op.arity {
      if let broken = n.op.definition.operandInvariant(n, producer: { producer[$0] }) {
        errors.append(.error(broken.message, at: n.argRange(broken.operand)))
      }
      producer[n.name] = n.op
    }
    return errors
  }

  /// Model files are written in the forward dialect. The backward and fused ops, and `gradient`
  /// statements, exist so the compiler's IR dumps re-parse; in a model file they would bypass the
  /// checks that differentiation and fusion guarantee (a saved argmax that is an arbitrary tensor,
  /// a gradient that is not one), so they are refused, each where it is written.
  public static func requireForwardDialect(_ g: Graph) throws(DiagnosticList) {
    var errors: [Diagnostic] = []
    for n in g.nodes {
      let spelling = n.op.spelling
      switch n.op.role {
      case .forward:
        guard n.op.isCompilerForm else { continue }
        let m = "'scaled: true' gives \(spelling) a folded batch norm, which only the compiler forms in inference programs "
          + "(dump-ir --stage inference); write the batchnorm after the \(spelling) and cnnc folds it"
        errors.append(Diagnostic.error(m, at: n.opRange))
      case .backward:
        let m = "'\(spelling)' is an op of the backward dialect, which only the compiler writes (dump-ir --stage grad); "
          + "a model file uses the forward ops (\(forwardOps)) and cnnc derives the gradients"
        errors.append(Diagnostic.error(m, at: n.opRange))
      case .fused:
        let m = "'\(spelling)' is a fused op, which only the compiler forms (dump-ir --stage fused); "
          + "write \(fusedParts(n.op)) and cnnc fuses them"
        errors.append(Diagnostic.error(m, at: n.opRange))
      }
    }
    for d in g.gradients {
      let m = "'gradient' statements belong to differentiated graphs, which only the compiler writes; "
        + "a model file names its loss with 'minimize' and cnnc derives the gradients"
      errors.append(Diagnostic.error(m, at: d.range))
    }
    if !errors.isEmpty { throw DiagnosticList(errors.sorted(by: diagnosticOrder)) }
  }

  static let forwardOps = OpSyntax.forwardNames.joined(separator: ", ")

  /// The forward ops a fused op stands for.
  static func fusedParts(_ op: Op) -> String {
    (type(of: op.definition) as? any FusedOp.Type)?.replaces ?? "the forward ops it stands for"
  }
}
