/// Prints a graph as canonical `.graph` text; `Parser.parse(print(g)) == g`.
public enum Printer {
  /// `types` (from shape inference), when given, adds each value's type as a trailing comment.
  public static func print(_ g: Graph, types: [String: TensorType]? = nil) -> String {
    var out = "graph \(g.name)\n\n"
    for i in g.inputs {
      let dims = i.dims.map { d in
        switch d {
        case .batch: "N"
        case .fixed(let v): "\(v)"
        }
      }
      out += "input \(i.name): \(i.dtype.rawValue)[\(dims.joined(separator: ", "))]\n"
    }
    if !g.inputs.isEmpty { out += "\n" }
    let width = min(20, g.nodes.map(\.name.count).max() ?? 0)
    var lines: [String] = []
    for n in g.nodes {
      let pad = String(repeating: " ", count: max(0, width - n.name.count))
      lines.append("\(n.name)\(pad) = \(expression(n.op, n.args))")
    }
    if let types {
      let w = lines.map(\.count).max() ?? 0
      lines = zip(lines, g.nodes).map { line, n in
        guard let t = types[n.name] else { return line }
        return line + String(repeating: " ", count: w - line.count) + "  # \(t)"
      }
    }
    out += lines.map { $0 + "\n" }.joined()
    if !g.nodes.isEmpty { out += "\n" }
    let named = g.nodes.compactMap { n in g.stateNames[n.name].map { "state \(n.name) \"\($0)\"\n" } }
    if !named.isEmpty { out += named.joined() + "\n" }
    if let o = g.output { out += "output \(o)\n" }
    if let m = g.minimize { out += "minimize \(m)\n" }
    for d in g.gradients { out += "gradient \(d.parameter) = \(d.value)\n" }
    return out
  }

  /// `op` applied to the values `args`, as a statement's right-hand side: `conv2d(x, filters: 8, kernel: 3)`.
  public static func expression(_ op: Op, _ args: [String]) -> String {
    "\(op.spelling)(\((args + op.printedAttributes.map { "\($0.0): \($0.1)" }).joined(separator: ", ")))"
  }
}
