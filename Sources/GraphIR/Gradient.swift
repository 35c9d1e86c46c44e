/// Collects the backward nodes that the per-op gradient rules emit, with fresh names.
public struct GradientBuilder {
  public private(set) var nodes: [Node] = []
  public private(set) var parameterGradients: [GradientDecl] = []
  private var taken: Set<String>
  /// The forward values' dimensions (at batch 1), where known: a rule whose gradient depends on broadcasting
  /// reads them.
  public let dims: [String: [Int]]

  public init(taken: Set<String>, dims: [String: [Int]] = [:]) {
    self.taken = taken
    self.dims = dims
  }

  /// Whether `a` and `b` are known to have one shape (else a broadcasting rule takes the general way).
  public func sameShape(_ a: String, _ b: String) -> Bool {
    guard let x = dims[a], let y = dims[b] else { return false }
    return x == y
  }

  /// Appends `op(args)` under a fresh name derived from `hint` and returns that name.
  public mutating func emit(_ hint: String, _ op: Op, _ args: [String]) -> String {
    var name = hint
    var k = 2
    while taken.contains(name) {
      name = "\(hint)\(k)"
      k += 1
    }
    taken.insert(name)
    nodes.append(Node(name: name, op: op, args: args))
    return name
  }

  /// Emits the gradient of the parameter `param` (e.g. `conv1.weight`) and records it; returns its value.
  @discardableResult
  public mutating func parameterGradient(_ param: String, _ op: Op, _ args: [String]) -> String {
    let value = emit(param.replacingDots() + "_grad", op, args)
    parameterGradients.append(GradientDecl(parameter: param, value: value))
    return value
  }
}

extension String {
  func replacingDots() -> String { String(map { $0 == "." ? "_" : $0 }) }
}

