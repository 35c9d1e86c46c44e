import GraphIR

/// The static type of every value and parameter once the batch size is bound.
public struct ShapeTable: Equatable, Sendable {
  public var batch: Int
  public var types: [String: TensorType]
  public subscript(_ name: String) -> TensorType? { types[name] }
  public init(batch: Int, types: [String: TensorType] = [:]) {
    self.batch = batch
    self.types = types
  }
}

/// Binds `N` to `batch` and applies each op's shape rule, reporting every failure.
///
/// Shape arithmetic is overflow-checked: absurd sizes are diagnostics, never traps. `known` holds types
/// already inferred for values of an earlier stage whose nodes this graph keeps unchanged (differentiation
/// appends nodes and changes none), so each value's rule runs once.
public func inferShapes(_ g: Graph, batch: Int, known: ShapeTable? = nil) throws(DiagnosticList) -> ShapeTable {
  var errors: [Diagnostic] = []
  var types: [String: TensorType] = known?.batch == batch ? known!.types : [:]
  guard batch >= 1, batch <= 1 << 24 else {
    throw DiagnosticList([.error("batch size must be between 1 and 16777216, got \(batch)", at: .synthesized)])
  }
  for i in g.inputs {
    let dims = i.dims.map { d -> Int in
      switch d {
      case .batch: batch
      case .fixed(let v): v
      }
    }
    let t = TensorType(i.dtype, dims)
    guard t.checkedCount != nil else {
      errors.append(.error("input '\(i.name)' of type \(t) has more than 2^40 elements", at: i.range))
      continue
    }
    types[i.name] = t
  }
  for n in g.nodes where types[n.name] == nil {
    let operands = n.args.map { types[$0] }
    // An operand whose type failed earlier was already reported.
    guard operands.allSatisfy({ $0 != nil }) else { continue }
    let x = operands.map { $0! }
    do throws(ShapeError) {
      let t = try n.op.resultType(x)
      types[n.name] = t
      let d = n.op.definition
      for (suffix, st) in zip(d.secondaryOutputs, d.secondaryTypes(x, result: t)) { types["\(n.name).\(suffix)"] = st }
      for (suffix, pt) in zip(d.parameterSuffixes, d.parameterTypes(x)) { types["\(n.name).\(suffix)"] = pt }
      for (suffix, bt) in zip(d.bufferSuffixes, d.bufferTypes(x)) { types["\(n.name).\(suffix)"] = bt }
    } catch {
      let at = error.operand.map { n.argRange($0) } ?? n.opRange
      // The rule's message names the op already ("conv2d expects ..."); say which statement once.
      let who = error.message.hasPrefix(n.op.spelling) ? "'\(n.name)'" : "\(n.op.spelling) '\(n.name)'"
      errors.append(.error("\(who): \(error.message)", at: at))
    }
  }
  if let m = g.minimize, let t = types[m], t != TensorType(.f32, []) {
    errors.append(.error("'minimize' needs a scalar f32[] value such as a cross_entropy loss; '\(m)' is \(t)", at: g.minimizeRange))
  }
  if let o = g.output, let t = types[o], t.dtype != .f32 {
    errors.append(.error("'output' must be an f32 tensor (the logits); '\(o)' is \(t)", at: g.outputRange))
  }
  if !errors.isEmpty { throw DiagnosticList(errors.sorted(by: diagnosticOrder)) }
  return ShapeTable(batch: batch, types: types)
}
