import GraphIR

/// One row of the `cnnc compile` table.
public struct PlanRow: Sendable {
  public var name: String
  public var op: String
  public var type: TensorType
  public var parameters: Int
  public var flopsPerImage: Int
  public var activationBytes: Int
}

/// Per-statement output type, parameter count, forward FLOPs per image and activation bytes.
public func summarize(_ g: Graph, _ shapes: ShapeTable) -> [PlanRow] {
  var rows: [PlanRow] = []
  for i in g.inputs {
    let t = shapes.types[i.name]!
    rows.append(PlanRow(name: i.name, op: "input", type: t, parameters: 0, flopsPerImage: 0, activationBytes: t.count * 4))
  }
  for n in g.nodes {
    guard let t = shapes.types[n.name] else { continue }
    let x = n.args.compactMap { shapes.types[$0] }
    let params = n.op.parameterSuffixes.reduce(0) { $0 + (shapes.types["\(n.name).\($1)"]?.count ?? 0) }
    rows.append(PlanRow(name: n.name, op: n.op.spelling, type: t, parameters: params,
                        flopsPerImage: n.op.flopsPerImage(x, result: t), activationBytes: t.count * 4))
  }
  return rows
}
