/// Explicit vector form of elementwise loops, for back ends whose optimiser does not vectorise them itself.
///
/// An innermost `loop v < n` qualifies when its body is only locals and stores whose indices are
/// `base + v` (`base` free of `v`), over arithmetic, max, square root and compare-selects, with every
/// other load and integer operand free of `v`. It becomes a loop over `n / lanes` blocks of full vectors
/// and, when `lanes` does not divide `n`, one block of `n % lanes` lanes (masked loads and stores).
/// Elementwise operations round per lane as they do per element, so the results are bit-identical.
/// The Swift back end runs this pass: swiftc does not widen these loops. The LLVM back end does not:
/// LLVM's loop vectoriser widens (and interleaves) the scalar loops for the target itself.
public func vectorizeElementwiseLoops(_ program: Program) -> Program {
  var p = program
  p.functions = program.functions.map { Function(name: $0.name, body: vectorizeElementwiseLoops($0.body, lanes: program.lanes)) }
  p.sharedKernels = program.sharedKernels.map {
    SharedKernel(name: $0.name, parameters: $0.parameters, body: vectorizeElementwiseLoops($0.body, lanes: program.lanes))
  }
  return p
}

/// `body` with each qualifying loop, at any depth, in vector form of `lanes` floats.
public func vectorizeElementwiseLoops(_ body: [Stmt], lanes: Int) -> [Stmt] {
  body.flatMap { s -> [Stmt] in
    switch s {
    case .loop(let v, let n, let inner):
      if let loop = ElementwiseLoop(v, inner) { return loop.vectorized(n, lanes: lanes) }
      return [.loop(v, n, vectorizeElementwiseLoops(inner, lanes: lanes))]
    case .when(let c, let inner): return [.when(c, vectorizeElementwiseLoops(inner, lanes: lanes))]
    case .region(let name, let inner): return [.region(name, vectorizeElementwiseLoops(inner, lanes: lanes))]
    case .parallel(let v, let n, let inner): return [.parallel(v, n, vectorizeElementwiseLoops(inner, lanes: lanes))]
    case .scalarLoops: return [s]
    case .kernel(let name, let inner): return [.kernel(name, vectorizeElementwiseLoops(inner, lanes: lanes))]
    case .store, .accumulate, .local, .set, .gemm, .comment, .vlocal, .vset, .vstore, .ulocal, .tick, .call: return [s]
    }
  }
}

/// A loop body that `vectorizeElementwiseLoops` can widen, and the locals it declares.
struct ElementwiseLoop {
  let variable: String
  let body: [Stmt]
  let locals: Set<String>

  init?(_ v: String, _ body: [Stmt]) {
    var locals = Set<String>()
    for s in body {
      switch s {
      case .local(let n, let e):
        guard Self.vectorizable(e, v, locals) else { return nil }
        locals.insert(n)
      case .store(_, let i, let e):
        guard Self.unitStride(i, v) != nil, Self.vectorizable(e, v, locals) else { return nil }
      case .comment: continue
      default: return nil
      }
    }
    guard body.contains(where: { if case .store = $0 { true } else { false } }) else { return nil }
    (variable, self.body, self.locals) = (v, body, locals)
  }

  /// The full-vector loop (index `v * lanes`) and the partial block after it (index `n - n % lanes`).
  func vectorized(_ n: Int, lanes: Int) -> [Stmt] {
    var out: [Stmt] = []
    if n >= lanes { out.append(.loop(variable, n / lanes, block(.v(variable) * lanes, lanes: lanes))) }
    // The partial block runs once; its loop only scopes its vector locals.
    if n % lanes > 0 { out.append(.loop(variable, 1, block(.v(variable) + (n - n % lanes), lanes: n % lanes))) }
    return out
  }

  /// The body on `lanes` consecutive elements from `first`.
  func block(_ first: IExpr, lanes: Int) -> [Stmt] {
    body.compactMap { s in
      switch s {
      case .local(let n, let e): .vlocal(Self.vectorName(n), vector(e, first, lanes))
      case .store(let b, let i, let e): .vstore(b, first + Self.unitStride(i, variable)!, vector(e, first, lanes), lanes: lanes)
      default: nil
      }
    }
  }

  static func vectorName(_ local: String) -> String { "\(local)_v" }

  /// `e` on the lanes from `first`: unit-stride loads become vector loads, everything free of the loop
  /// variable a broadcast.
  func vector(_ e: FExpr, _ first: IExpr, _ lanes: Int) -> VExpr {
    func v(_ x: FExpr) -> VExpr { vector(x, first, lanes) }
    switch e {
    case .local(let n) where locals.contains(n): return .local(Self.vectorName(n))
    case .load(let b, let i):
      guard let base = Self.unitStride(i, variable) else { return .broadcast(e) }
      return .load(b, first + base, lanes: lanes)
    case .add(let a, let b): return .add(v(a), v(b))
    case .sub(let a, let b): return .sub(v(a), v(b))
    case .mul(let a, let b): return .mul(v(a), v(b))
    case .div(let a, let b): return .div(v(a), v(b))
    case .max(let a, let b): return .max(v(a), v(b))
    case .sqrt(let a): return .sqrt(v(a))
    case .select(.fgt(let p, let q), let a, let b): return .selectGreater(v(p), v(q), v(a), v(b))
    case .bf16Pair(let a, let b): return .bf16Pair(v(a), v(b))
    case .round(let a): return .round(v(a))
    case .fromInt32(let a): return .fromInt32(v(a))
    case .bytes(let a, let b, let c, let d): return .bytes(v(a), v(b), v(c), v(d))
    case .dotU8S8(let acc, let a, let b, let fit): return .dotU8S8(v(acc), v(a), v(b), pairsFit16: fit)
    case .c, .local, .learningRate, .ofInt, .exp, .log, .select: return .broadcast(e)
    }
  }

  /// `base` when `e` is `base + v` with `base` free of `v`.
  static func unitStride(_ e: IExpr, _ v: String) -> IExpr? {
    if e == .v(v) { return .c(0) }
    if case .add(let a, let b) = e {
      if b == .v(v), !mentions(a, v) { return a }
      if a == .v(v), !mentions(b, v) { return b }
      if !mentions(b, v), let inner = unitStride(a, v) { return inner + b }
    }
    return nil
  }

  static func mentions(_ e: IExpr, _ v: String) -> Bool {
    switch e {
    case .c, .step: false
    case .v(let n): n == v
    case .add(let a, let b), .mul(let a, let b): mentions(a, v) || mentions(b, v)
    case .div(let a, _), .rem(let a, _), .label(let a): mentions(a, v)
    case .ofFloat: true  // conservatively
    }
  }

  /// Whether every lane of `e` is the scalar expression at that lane's element.
  static func vectorizable(_ e: FExpr, _ v: String, _ locals: Set<String>) -> Bool {
    switch e {
    case .c, .learningRate, .local: true
    case .load(_, let i): unitStride(i, v) != nil || !mentions(i, v)
    case .add(let a, let b), .sub(let a, let b), .mul(let a, let b), .div(let a, let b), .max(let a, let b), .bf16Pair(let a, let b):
      vectorizable(a, v, locals) && vectorizable(b, v, locals)
    case .sqrt(let a), .round(let a), .fromInt32(let a): vectorizable(a, v, locals)
    case .bytes(let a, let b, let c, let d): [a, b, c, d].allSatisfy { vectorizable($0, v, locals) }
    case .dotU8S8(let a, let b, let c, _): [a, b, c].allSatisfy { vectorizable($0, v, locals) }
    case .select(.fgt(let p, let q), let a, let b):
      vectorizable(p, v, locals) && vectorizable(q, v, locals) && vectorizable(a, v, locals) && vectorizable(b, v, locals)
    case .ofInt(let i): !mentions(i, v)
    case .exp, .log, .select: false
    }
  }
}
