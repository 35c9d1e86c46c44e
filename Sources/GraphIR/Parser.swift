/// Parses `.graph` source into a `Graph`, reporting every error found in one run.
public enum Parser {
  /// Parses `source`; `defaultName` is the graph name when no `graph` statement is given (the file's stem).
  public static func parse(_ source: [UInt8], defaultName: String) throws(DiagnosticList) -> Graph {
    var lexer = Lexer(source)
    var p = ParserState(tokens: lexer.tokenize(), defaultName: defaultName)
    p.parseFile()
    p.resolve()
    guard p.diagnostics.isEmpty else { throw DiagnosticList(p.diagnostics.sorted(by: diagnosticOrder)) }
    return p.graph
  }

  public static func parse(_ text: String, defaultName: String) throws(DiagnosticList) -> Graph {
    try parse(Array(text.utf8), defaultName: defaultName)
  }
}

/// Source order for diagnostics; messages without a position (such as a missing statement) come last.
public func diagnosticOrder(_ a: Diagnostic, _ b: Diagnostic) -> Bool {
  func key(_ d: Diagnostic) -> (Int, Int) { d.range.line == 0 ? (Int.max, 0) : (d.range.line, d.range.column) }
  return key(a) < key(b)
}

/// A statement's worth of tokens failed to parse; the parser skips to the next line.
private struct SyntaxError: Error {}

private struct ParserState {
  var tokens: [Token]
  var pos = 0
  var graph: Graph
  var diagnostics: [Diagnostic] = []
  var sawStatement = false
  var graphRange: SourceRange?
  var outputRange: SourceRange?
  var minimizeRange: SourceRange?
  var gradientRanges: [SourceRange] = []
  /// The defined names in order, for "did you mean" (sorted once, when the first undefined use is found).
  var sortedNames: [String] = []
  /// Name comparisons left for "did you mean" hints in this file.
  var suggestionBudget = 1_000_000
  /// Messages kept from one file: a pathological file must not produce an unbounded report.
  static let maxDiagnostics = 200

  init(tokens: [Token], defaultName: String) {
    self.tokens = tokens
    graph = Graph(name: defaultName)
  }

  var current: Token { tokens[pos] }

  mutating func advance() -> Token {
    let t = tokens[pos]
    if pos < tokens.count - 1 { pos += 1 }
    return t
  }

  mutating func error(_ message: String, at range: SourceRange, notes: [Diagnostic] = []) {
    // One pathological file must not produce an unbounded report.
    guard diagnostics.count < Self.maxDiagnostics else { return }
    diagnostics.append(.error(message, at: range, notes: notes))
  }

  func describe(_ t: Token) -> String {
    switch t.kind {
    case .identifier(let s): "'\(s)'"
    case .integer(let s), .float(let s): "'\(s.count > 24 ? String(s.prefix(24)) + "..." : s)'"
    case .punct(let b): "'\(Character(UnicodeScalar(b)))'"
    case .newline: "end of line"
    case .end: "end of file"
    case .invalid(let s): s
    case .string(let s): "\"\(s)\""
    }
  }

  mutating func expectPunct(_ c: Character, _ what: String) throws(SyntaxError) {
    if case .punct(let b) = current.kind, b == c.asciiValue {
      _ = advance()
      return
    }
    error("expected '\(c)' \(what), found \(describe(current))", at: current.range)
    throw SyntaxError()
  }

  func isPunct(_ c: Character) -> Bool {
    if case .punct(let b) = current.kind { return b == c.asciiValue }
    return false
  }

  mutating func expectIdentifier(_ what: String) throws(SyntaxError) -> (String, SourceRange) {
    if case .identifier(let s) = current.kind {
      let r = advance().range
      return (s, r)
    }
    error("expected \(what), found \(describe(current))", at: current.range)
    throw SyntaxError()
  }

  /// A value reference: `name` or a parameter `name.weight` / `name.bias`.
  mutating func expectReference(_ what: String) throws(SyntaxError) -> (String, SourceRange) {
    var (name, range) = try expectIdentifier(what)
    if isPunct(".") {
      _ = advance()
      let (field, fr) = try expectIdentifier("a parameter name ('weight' or 'bias') or 'argmax' after '.'")
      name += "." + field
      range.length = fr.column + fr.length - range.column
    }
    return (name, range)
  }

  mutating func expectEndOfStatement() throws(SyntaxError) {
    switch current.kind {
    case .newline, .end: return
    default:
      error("expected end of line after the statement, found \(describe(current))", at: current.range)
      throw SyntaxError()
    }
  }

  mutating func skipLine() {
    while true {
      switch current.kind {
      case .newline: _ = advance(); return
      case .end: return
      default: _ = advance()
      }
    }
  }

  mutating func parseFile() {
    while true {
      switch current.kind {
      case .end: return
      case .newline: _ = advance(); continue
      default: break
      }
      do throws(SyntaxError) {
        try rejectInvalidCharacters()
        try parseStatement()
        try expectEndOfStatement()
      } catch {}
      skipLine()
    }
  }

  /// A line holding a character outside the language is reported once, at that character.
  mutating func rejectInvalidCharacters() throws(SyntaxError) {
    var i = pos
    while i < tokens.count {
      switch tokens[i].kind {
      case .newline, .end: return
      case .invalid(let s):
        error("unexpected character \(s)", at: tokens[i].range)
        // The statement is broken, but its name exists: later uses should not cascade into errors.
        if case .identifier(let name) = current.kind, isPunctAt(pos + 1, "=") { defined[name] = defined[name] ?? current.range }
        throw SyntaxError()
      default: i += 1
      }
    }
  }

  mutating func parseStatement() throws(SyntaxError) {
    let first = current
    if case .invalid(let s) = first.kind {
      error("unexpected character \(s)", at: first.range)
      throw SyntaxError()
    }
    guard case .identifier(let word) = first.kind else {
      error("expected a statement (graph, input, output, minimize or NAME = OP(...)), found \(describe(first))", at: first.range)
      throw SyntaxError()
    }
    // Keywords are not reserved: `NAME =` is always an assignment.
    if case .punct(61) = tokens[min(pos + 1, tokens.count - 1)].kind {
      try parseAssignment()
      sawStatement = true
      return
    }
    defer { sawStatement = true }
    switch word {
    case "graph": try parseGraphName()
    case "input": try parseInput()
    case "output": try parseOutput()
    case "minimize": try parseMinimize()
    case "gradient": try parseGradient()
    case "state": try parseState()
    default:
      if case .identifier(let next) = tokens[min(pos + 1, tokens.count - 1)].kind, OpSyntax.byName[next] != nil {
        error("expected '=' between '\(word)' and '\(next)'", at: tokens[pos + 1].range)
      } else if isPunctAt(pos + 1, "(") || OpSyntax.byName[word] != nil {
        error("expected 'NAME = \(word)(...)': a statement must assign its result to a name", at: first.range)
      } else if let s = closestMatch(word, in: ["graph", "input", "output", "minimize"]) {
        error("unknown statement '\(word)' (did you mean '\(s)'?)", at: first.range)
      } else {
        error("unknown statement '\(word)'; expected graph, input, output, minimize or NAME = OP(...)", at: first.range)
      }
      throw SyntaxError()
    }
  }

  func isPunctAt(_ i: Int, _ c: Character) -> Bool {
    guard i < tokens.count, case .punct(let b) = tokens[i].kind else { return false }
    return b == c.asciiValue
  }

  mutating func parseGraphName() throws(SyntaxError) {
    let kw = advance()
    let (name, _) = try expectIdentifier("a graph name after 'graph'")
    if let prev = graphRange {
      error("duplicate 'graph' statement", at: kw.range, notes: [.note("previous 'graph' statement is here", at: prev)])
    } else if sawStatement {
      error("'graph' must come before any other statement", at: kw.range)
    }
    graphRange = kw.range
    graph.name = name
  }

  mutating func parseInput() throws(SyntaxError) {
    _ = advance()
    let (name, range) = try expectIdentifier("an input name after 'input'")
    do throws(SyntaxError) {
      try parseInput(name, range)
    } catch {
      defined[name] = defined[name] ?? range
      throw error
    }
  }

  mutating func parseInput(_ name: String, _ range: SourceRange) throws(SyntaxError) {
    try expectPunct(":", "after the input name")
    let (dtypeName, dtypeRange) = try expectIdentifier("an element type (f32 or i32)")
    let dtype = DType(rawValue: dtypeName)
    if dtype == nil {
      let hint = closestMatch(dtypeName, in: ["f32", "i32"]).map { " (did you mean '\($0)'?)" } ?? "; expected f32 or i32"
      error("unknown element type '\(dtypeName)'\(hint)", at: dtypeRange)
    }
    try expectPunct("[", "to open the input's dimensions")
    var dims: [Dim] = []
    var bad = dtype == nil
    while true {
      let t = advance()
      switch t.kind {
      case .identifier("N"):
        if !dims.isEmpty {
          error("the batch dimension 'N' may appear only as the first dimension of an input", at: t.range)
          bad = true
        }
        dims.append(.batch)
      case .integer(let s):
        if let v = Int(s), v <= TensorType.maxElements {
          if v == 0 {
            error("dimension must be a positive integer, got 0", at: t.range)
            bad = true
          }
          dims.append(.fixed(v))
        } else {
          error("dimension \(describe(t)) is too large (at most 2^40)", at: t.range)
          bad = true
          dims.append(.fixed(1))
        }
      default:
        error("expected a dimension (a positive integer or N), found \(describe(t))", at: t.range)
        throw SyntaxError()
      }
      if isPunct(",") { _ = advance(); continue }
      try expectPunct("]", "to close the input's dimensions")
      break
    }
    if let dtype, !bad { define(name, range) { g in g.inputs.append(InputDecl(name: name, dtype: dtype, dims: dims, range: range)) } }
    else { defined[name] = defined[name] ?? range }
  }

  /// `output NAME` or `minimize NAME`: a single-use statement naming a value. Returns the value's name
  /// and range; a repeat is an error with a note at the first one.
  mutating func parseNamingStatement(_ keyword: String, _ seen: inout SourceRange?, rule: String) throws(SyntaxError) -> (String, SourceRange) {
    let kw = advance()
    let (name, range) = try expectIdentifier("a value name after '\(keyword)'")
    if let prev = seen {
      error("duplicate '\(keyword)' statement: \(rule)", at: kw.range, notes: [.note("previous '\(keyword)' statement is here", at: prev)])
    }
    seen = kw.range
    return (name, range)
  }

  mutating func parseOutput() throws(SyntaxError) {
    var seen = outputRange
    defer { outputRange = seen }
    (graph.output, graph.outputRange) = try parseNamingStatement("output", &seen, rule: "a graph has exactly one output")
  }

  mutating func parseMinimize() throws(SyntaxError) {
    var seen = minimizeRange
    defer { minimizeRange = seen }
    (graph.minimize, graph.minimizeRange) = try parseNamingStatement("minimize", &seen, rule: "a graph minimises at most one value")
  }

  mutating func parseGradient() throws(SyntaxError) {
    let keyword = advance().range
    let (param, pr) = try expectReference("a parameter name after 'gradient'")
    try expectPunct("=", "after the parameter name")
    let (value, vr) = try expectIdentifier("a value name")
    graph.gradients.append(GradientDecl(parameter: param, value: value, range: keyword))
    gradientRanges.append(pr)
    pendingUses.append((value, vr))
  }

  /// `state NODE "prefix"` (format 1.3): the node's parameters and buffers are saved and loaded as
  /// `prefix.weight`, ... (PyTorch's `state_dict` keys, which may hold dots: `layer1.0.conv1`).
  mutating func parseState() throws(SyntaxError) {
    _ = advance()
    let (node, range) = try expectIdentifier("a node name after 'state'")
    guard case .string(let prefix) = current.kind else {
      error("expected the node's state_dict prefix as a quoted string (state \(node) \"layer1.0.conv1\"), found \(describe(current))", at: current.range)
      throw SyntaxError()
    }
    let prefixRange = advance().range
    guard Graph.isStatePrefix(prefix) else {
      error("state_dict prefix \"\(prefix)\" must be names of letters, digits and underscores joined by dots", at: prefixRange)
      return
    }
    if graph.stateNames[node] != nil { error("'\(node)' already has a state_dict prefix", at: range); return }
    if let other = graph.stateNames.first(where: { $0.value == prefix })?.key {
      error("state_dict prefix \"\(prefix)\" is already that of '\(other)'", at: prefixRange)
      return
    }
    graph.stateNames[node] = prefix
    stateRanges.append((node, range))
  }

  /// The `state` statements' nodes, checked after the whole file is read.
  var stateRanges: [(String, SourceRange)] = []

  // MARK: Assignments

  var defined: [String: SourceRange] = [:]
  /// Uses checked after the whole file is read (so a later definition gives a precise message).
  var pendingUses: [(String, SourceRange)] = []
  var nodeIndex: [String: Int] = [:]

  mutating func define(_ name: String, _ range: SourceRange, _ add: (inout Graph) -> Void) {
    if let prev = defined[name] {
      error("redefinition of '\(name)': every name is defined exactly once", at: range,
            notes: [.note("previous definition of '\(name)' is here", at: prev)])
      return
    }
    defined[name] = range
    add(&graph)
  }

  mutating func parseAssignment() throws(SyntaxError) {
    let (name, range) = try expectIdentifier("a value name")
    do throws(SyntaxError) {
      try parseAssignment(name, range)
    } catch {
      // The statement is broken, but its name exists: later uses should not cascade into errors.
      defined[name] = defined[name] ?? range
      throw error
    }
  }

  /// An operand or attribute as written: positional operands, then `key: value` attributes.
  typealias Written = (args: [(String, SourceRange)], attrs: [(key: String, keyRange: SourceRange, value: AttrValue, valueRange: SourceRange)])

  mutating func parseAssignment(_ name: String, _ range: SourceRange) throws(SyntaxError) {
    try expectPunct("=", "after the value name")
    let (opName, opRange) = try expectIdentifier("an op name after '='")
    let syntax = OpSyntax.byName[opName]
    if syntax == nil {
      let hint = closestMatch(opName, in: OpSyntax.all.map(\.name)).map { " (did you mean '\($0)'?)" } ?? ""
      error("unknown op '\(opName)'\(hint)", at: opRange)
    }
    try expectPunct("(", "after the op name")
    var broken = syntax == nil
    let written = try parseArgumentList(&broken)
    for (arg, r) in written.args { pendingUses.append((arg, r)) }
    guard let syntax else { defined[name] = defined[name] ?? range; return }

    // The operands the attributes ask for (a scaled conv takes one more), read from the attributes as
    // written; the syntax's when they do not make an op (their errors are reported below).
    let asWritten = Dictionary(written.attrs.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
    let operands = (try? syntax.make(Attributes(asWritten, operandCount: written.args.count)))?.operandNames ?? syntax.operands
    if written.args.count != operands.count {
      let want = operands.count
      error("\(opName) takes \(want) operand\(want == 1 ? "" : "s") (\(operands.joined(separator: ", "))), got \(written.args.count)",
            at: written.args.count > want ? written.args[want].1 : opRange)
      broken = true
    }
    let values = checkAttributes(written.attrs, of: syntax, at: opRange, &broken)
    var op: Op?
    if !broken {
      do throws(AttrError) {
        op = try syntax.make(Attributes(values, operandCount: written.args.count))
      } catch {
        let at = written.attrs.first { $0.key == error.attribute }?.valueRange ?? opRange
        self.error("\(opName): \(error.message)", at: at)
      }
    }
    guard let op else { defined[name] = defined[name] ?? range; return }
    let node = Node(name: name, op: op, args: written.args.map(\.0), range: range, opRange: opRange, argRanges: written.args.map(\.1))
    var index: Int?
    define(name, range) { g in
      index = g.nodes.count
      g.nodes.append(node)
    }
    if let index { nodeIndex[name] = index }
  }

  /// The argument list after '(' up to and including ')'. Errors that leave the statement's extent clear
  /// set `broken` and continue; the others end the statement.
  mutating func parseArgumentList(_ broken: inout Bool) throws(SyntaxError) -> Written {
    var written: Written = ([], [])
    if isPunct(")") {
      _ = advance()
      return written
    }
    while true {
      let start = current
      if isPunctAt(pos + 1, ":") {
        let (key, keyRange) = try expectIdentifier("an attribute name")
        _ = advance()  // ':'
        let valueToken = advance()
        written.attrs.append((key, keyRange, try attributeValue(valueToken, &broken), valueToken.range))
      } else {
        if case .identifier = start.kind {} else {
          error("expected a value name or 'key: value', found \(describe(start))", at: start.range)
          throw SyntaxError()
        }
        let (arg, argRange) = try expectReference("a value name")
        if let last = written.attrs.last {
          error("positional argument '\(arg)' must come before the attributes", at: argRange,
                notes: [.note("attribute '\(last.key)' is given here", at: last.keyRange)])
          broken = true
        }
        written.args.append((arg, argRange))
      }
      if isPunct(",") { _ = advance(); continue }
      try expectPunct(")", "to close the argument list")
      return written
    }
  }

  /// An attribute's value token: an integer, a float or a boolean.
  mutating func attributeValue(_ token: Token, _ broken: inout Bool) throws(SyntaxError) -> AttrValue {
    switch token.kind {
    case .integer(let s):
      guard let v = Int(s) else {
        error("integer literal \(describe(token)) is too large", at: token.range)
        broken = true
        return .int(1)
      }
      return .int(v)
    case .float(let s):
      guard let v = Double(s), v.isFinite else {
        error("float literal \(describe(token)) is out of range", at: token.range)
        throw SyntaxError()
      }
      return .float(v)
    case .identifier("true"): return .bool(true)
    case .identifier("false"): return .bool(false)
    case .identifier(let s): return .name(s)
    default:
      error("expected an attribute value (a number, true or false, or a name), found \(describe(token))", at: token.range)
      throw SyntaxError()
    }
  }

  /// The attributes' values by name once each is known to the op, unique and of its kind, and every
  /// required one is present (a misspelt one already suggested is not reported missing as well).
  mutating func checkAttributes(_ attrs: [(key: String, keyRange: SourceRange, value: AttrValue, valueRange: SourceRange)],
                                of syntax: OpSyntax, at opRange: SourceRange, _ broken: inout Bool) -> [String: AttrValue] {
    let opName = syntax.name
    var values: [String: AttrValue] = [:]
    var seen: [String: SourceRange] = [:]
    var suggested = Set<String>()
    for (key, keyRange, value, valueRange) in attrs {
      guard let spec = syntax.attrs.first(where: { $0.name == key }) else {
        let match = closestMatch(key, in: syntax.attrs.map(\.name))
        if let match { suggested.insert(match) }
        let hint = match.map { " (did you mean '\($0)'?)" }
          ?? (syntax.attrs.isEmpty ? "; \(opName) takes no attributes" : "")
        error("unknown attribute '\(key)' for \(opName)\(hint)", at: keyRange)
        broken = true
        continue
      }
      if let prev = seen[key] {
        error("duplicate attribute '\(key)'", at: keyRange, notes: [.note("'\(key)' is first given here", at: prev)])
        broken = true
        continue
      }
      seen[key] = keyRange
      switch (spec.kind, value) {
      case (.int, .int), (.bool, .bool), (.float, .float), (.name, .name): values[key] = value
      case (.float, .int(let v)): values[key] = .float(Double(v))
      default:
        error("attribute '\(key)' of \(opName) must be \(spec.kind.rawValue)", at: valueRange)
        broken = true
      }
    }
    for spec in syntax.attrs where spec.required && seen[spec.name] == nil && !suggested.contains(spec.name) {
      error("\(opName) requires the attribute '\(spec.name)'", at: opRange)
      broken = true
    }
    return values
  }

  // MARK: Name resolution

  /// Checks every use: defined, defined before use, parameters that exist; then output and minimize.
  mutating func resolve() {
    var position: [String: SourceRange] = defined
    for (name, range) in pendingUses { check(use: name, at: range, in: &position) }
    if let out = graph.output {
      check(use: out, at: graph.outputRange, in: &position, lateOK: true)
    } else {
      diagnostics.append(.error("the graph has no 'output' statement; exactly one is required", at: .synthesized))
    }
    if let m = graph.minimize { check(use: m, at: graph.minimizeRange, in: &position, lateOK: true) }
    let stateful = Set(graph.nodes.filter { !($0.op.parameterSuffixes + $0.op.bufferSuffixes).isEmpty }.map(\.name))
    for (node, range) in stateRanges where !stateful.contains(node) {
      error(defined[node] == nil ? "'\(node)' in a state statement is not a node of this graph" : "'\(node)' has no parameters or buffers to name", at: range)
    }
    let parameters = Set(graph.parameterNames)
    for (g, r) in zip(graph.gradients, gradientRanges) where !parameters.contains(g.parameter) {
      error("'\(g.parameter)' is not a parameter of this graph", at: r)
    }
  }

  mutating func check(use name: String, at range: SourceRange, in position: inout [String: SourceRange], lateOK: Bool = false) {
    let parts = name.split(separator: ".", maxSplits: 1).map(String.init)
    let base = parts[0]
    guard let def = position[base] else {
      // Suggestions only for the messages that are kept, against names sorted once: the work stays linear in the file.
      guard diagnostics.count < Self.maxDiagnostics else { return }
      if sortedNames.count != defined.count { sortedNames = defined.keys.sorted() }
      // A fixed budget of comparisons per file keeps a file of thousands of undefined names fast; which
      // messages get a hint depends only on the file.
      suggestionBudget -= sortedNames.count
      let hint = suggestionBudget < 0 ? "" : closestMatch(base, in: sortedNames).map { " (did you mean '\($0)'?)" } ?? ""
      error("use of undefined value '\(base)'\(hint)", at: range)
      return
    }
    // A statement is one line, so a use on its definition's own line (`x = relu(x)`) reads the value being defined.
    if !lateOK, def.line == range.line {
      error("'\(base)' is used in its own definition; a statement can only read values defined on earlier lines", at: range)
      return
    }
    if !lateOK, (def.line, def.column) > (range.line, range.column) {
      error("'\(base)' is used before it is defined", at: range, notes: [.note("'\(base)' is defined here", at: def)])
      return
    }
    if parts.count == 2 {
      let node = nodeIndex[base].map { graph.nodes[$0] }
      let suffixes = (node?.op.parameterSuffixes ?? []) + (node?.op.bufferSuffixes ?? []) + (node?.op.secondaryOutputs ?? [])
      if !suffixes.contains(parts[1]) {
        let what = node.map { $0.op.spelling } ?? "this value"
        let has = suffixes.isEmpty ? "it has no parameters" : "it has " + suffixes.map { "'\(base).\($0)'" }.joined(separator: " and ")
        error("'\(name)' is not a parameter: '\(base)' is \(what == "this value" ? what : "a \(what)"), and \(has)", at: range)
      }
    }
  }
}
