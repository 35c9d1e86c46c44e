/// An `input NAME: DTYPE[DIM, ...]` declaration.
public struct InputDecl: Sendable {
  public var name: String
  public var dtype: DType
  public var dims: [Dim]
  public var range: SourceRange
  public init(name: String, dtype: DType, dims: [Dim], range: SourceRange = .synthesized) {
    self.name = name
    self.dtype = dtype
    self.dims = dims
    self.range = range
  }
}

extension InputDecl: Equatable {
  public static func == (a: InputDecl, b: InputDecl) -> Bool {
    a.name == b.name && a.dtype == b.dtype && a.dims == b.dims
  }
}

/// One single-assignment statement `NAME = OP(ARGS..., ATTRS...)`.
public struct Node: Sendable {
  public var name: String
  public var op: Op
  /// Operand value names; `NAME.weight` / `NAME.bias` refer to parameters.
  public var args: [String]
  /// Where the name is defined, where the op is spelled, and where each operand is.
  public var range: SourceRange
  public var opRange: SourceRange
  public var argRanges: [SourceRange]
  public init(name: String, op: Op, args: [String], range: SourceRange = .synthesized,
              opRange: SourceRange = .synthesized, argRanges: [SourceRange] = []) {
    self.name = name
    self.op = op
    self.args = args
    self.range = range
    self.opRange = opRange
    self.argRanges = argRanges
  }
  /// The same node with another op (ranges kept).
  public func replacing(op: Op) -> Node {
    var n = self
    n.op = op
    return n
  }
  public func argRange(_ i: Int) -> SourceRange { i < argRanges.count ? argRanges[i] : range }
}

extension Node: Equatable {
  public static func == (a: Node, b: Node) -> Bool { a.name == b.name && a.op == b.op && a.args == b.args }
}

/// `gradient PARAM = VALUE`: names the value holding a parameter's gradient in a backward graph.
public struct GradientDecl: Sendable {
  public var parameter: String
  public var value: String
  /// Where the statement is written (`.synthesized` for the ones `differentiate` makes).
  public var range: SourceRange
  public init(parameter: String, value: String, range: SourceRange = .synthesized) {
    self.parameter = parameter
    self.value = value
    self.range = range
  }
}

extension GradientDecl: Equatable {
  public static func == (a: GradientDecl, b: GradientDecl) -> Bool { a.parameter == b.parameter && a.value == b.value }
}

/// A whole network: a value type holding its statements in definition (topological) order.
public struct Graph: Sendable {
  public var name: String
  public var inputs: [InputDecl]
  public var nodes: [Node]
  public var output: String?
  public var minimize: String?
  public var gradients: [GradientDecl]
  /// Node name -> the `state_dict` prefix its parameters and buffers are saved under, where that is not the
  /// node's name (`layer1_0_conv1` -> `layer1.0.conv1`; `state` statements, format 1.3).
  public var stateNames: [String: String] = [:]
  /// Parameters a training step keeps fixed (fine-tuning's `--freeze`): the backward graph computes no gradient
  /// for them, nor for values only they need, and the optimiser leaves them alone. Set by a command, not written
  /// in the `.graph` text.
  public var frozen: Set<String> = []
  public var outputRange: SourceRange = .synthesized
  public var minimizeRange: SourceRange = .synthesized

  public init(name: String, inputs: [InputDecl] = [], nodes: [Node] = [], output: String? = nil,
              minimize: String? = nil, gradients: [GradientDecl] = []) {
    self.name = name
    self.inputs = inputs
    self.nodes = nodes
    self.output = output
    self.minimize = minimize
    self.gradients = gradients
  }

  /// The node that defines `name`, if a node does.
  public func node(named name: String) -> Node? { nodes.first { $0.name == name } }

  /// Parameter names in definition order (`conv1.weight`, `conv1.bias`, ...), PyTorch's `state_dict` order.
  public var parameterNames: [String] {
    nodes.flatMap { n in n.op.parameterSuffixes.map { "\(n.name).\($0)" } }
  }

  /// The values that depend on a trained parameter (one not `frozen`), in the forward nodes: the ones a gradient
  /// can reach. Without frozen parameters, every node that has or follows a parameter.
  public var trainedValues: Set<String> {
    var trained = Set<String>()
    for n in nodes where n.op.parameterSuffixes.contains(where: { !frozen.contains("\(n.name).\($0)") }) || n.args.contains(where: trained.contains) {
      trained.insert(n.name)
    }
    return trained
  }

  /// The nodes of a fine-tuning step that run as in evaluation (PyTorch's `module.eval()` on the frozen part):
  /// with frozen parameters, every forward node (or fusion of forward nodes) that no trained parameter feeds. Their batch norms normalise
  /// with the running statistics and leave them unchanged, their dropout passes values through, and no gradient
  /// reaches them. Empty when nothing is frozen.
  public var evaluationNodes: Set<String> {
    guard !frozen.isEmpty else { return [] }
    let trained = trainedValues
    return Set(nodes.filter { Self.isForward($0.op) && !trained.contains($0.name) }.map(\.name))
  }

  /// Whether `op` computes forward values: a forward op, or a fusion of forward ops.
  static func isForward(_ op: Op) -> Bool {
    let d = op.definition
    return d is any ForwardOp || (type(of: d) as? any FusedOp.Type)?.isForward == true
  }

  /// Buffer names (`bn1.running_mean`, ...) in definition order: float state with no gradient.
  public var bufferNames: [String] {
    nodes.flatMap { n in n.op.bufferSuffixes.map { "\(n.name).\($0)" } }
  }

  /// Whether `prefix` may name a node's state: names of letters, digits and underscores joined by dots
  /// (`layer1.0.conv1`), as PyTorch's module paths are.
  public static func isStatePrefix(_ prefix: String) -> Bool {
    prefix.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { part in
      !part.isEmpty && part.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
    }
  }

  /// The `state_dict` key of parameter, buffer or counter `name` (`node.suffix`): the node's prefix if it has
  /// one, else the name itself.
  public func stateKey(_ name: String) -> String {
    guard !stateNames.isEmpty, let dot = name.firstIndex(of: "."), let prefix = stateNames[String(name[..<dot])] else { return name }
    return prefix + name[dot...]
  }

  /// Step counters (`bn1.num_batches_tracked`), saved as 64-bit integers.
  public var counterNames: [String] {
    nodes.flatMap { n in n.op.counterSuffixes.map { "\(n.name).\($0)" } }
  }
}

extension Graph: Equatable {
  public static func == (a: Graph, b: Graph) -> Bool {
    a.name == b.name && a.inputs == b.inputs && a.nodes == b.nodes && a.output == b.output
      && a.minimize == b.minimize && a.gradients == b.gradients && a.stateNames == b.stateNames && a.frozen == b.frozen
  }
}
