import Lowering

/// `Vector` (the target's SIMD width) rendering of innermost elementwise loops: stores and locals whose indices are
/// `invariant + v`, over arithmetic, max, square root and compare-selects.
extension Writer {
  /// The locals declared in a vectorisable loop body, or nil when the loop does not qualify.
  func vectorPlan(_ v: String, _ body: [Stmt]) -> Set<String>? {
    var locals = Set<String>()
    for s in body {
      switch s {
      case .local(let n, let e):
        guard vectorizable(e, v, locals) else { return nil }
        locals.insert(n)
      case .store(_, let i, let e):
        guard unitStride(i, v) != nil, vectorizable(e, v, locals) else { return nil }
      case .comment: continue
      default: return nil
      }
    }
    return body.contains { if case .store = $0 { true } else { false } } ? locals : nil
  }

  /// `base` when `e` is `base + v` with `base` free of `v`.
  func unitStride(_ e: IExpr, _ v: String) -> IExpr? {
    if e == .v(v) { return .c(0) }
    if case .add(let a, let b) = e {
      if b == .v(v), !mentions(a, v) { return a }
      if a == .v(v), !mentions(b, v) { return b }
      if !mentions(b, v), let inner = unitStride(a, v) { return inner + b }
    }
    return nil
  }

  func mentions(_ e: IExpr, _ v: String) -> Bool {
    switch e {
    case .c, .step: false
    case .v(let n): n == v
    case .add(let a, let b), .mul(let a, let b): mentions(a, v) || mentions(b, v)
    case .div(let a, _), .rem(let a, _), .label(let a): mentions(a, v)
    case .ofFloat: true  // conservatively
    }
  }

  func vectorizable(_ e: FExpr, _ v: String, _ locals: Set<String>) -> Bool {
    switch e {
    case .c, .learningRate, .local: true
    case .load(_, let i): unitStride(i, v) != nil || !mentions(i, v)
    case .add(let a, let b), .sub(let a, let b), .mul(let a, let b), .div(let a, let b), .max(let a, let b):
      vectorizable(a, v, locals) && vectorizable(b, v, locals)
    case .sqrt(let a): vectorizable(a, v, locals)
    case .select(.fgt(let p, let q), let a, let b):
      vectorizable(p, v, locals) && vectorizable(q, v, locals) && vectorizable(a, v, locals) && vectorizable(b, v, locals)
    case .ofInt(let i): !mentions(i, v)
    default: false
    }
  }

  func vx(_ e: FExpr, _ v: String, _ locals: Set<String>) -> String {
    func splat(_ s: String) -> String { "Vector(repeating: \(s))" }
    switch e {
    case .c, .learningRate, .ofInt: return splat(fx(e))
    case .local(let n): return locals.contains(n) ? "\(n)_v" : splat(n)
    case .load(let b, let i):
      guard let base = unitStride(i, v) else { return splat(fx(e)) }
      return "loadVector(\(b.rawValue), \(ix(base)) &+ \(v))"
    case .add(let a, let b): return "(\(vx(a, v, locals)) + \(vx(b, v, locals)))"
    case .sub(let a, let b): return "(\(vx(a, v, locals)) - \(vx(b, v, locals)))"
    case .mul(let a, let b): return "(\(vx(a, v, locals)) * \(vx(b, v, locals)))"
    case .div(let a, let b): return "(\(vx(a, v, locals)) / \(vx(b, v, locals)))"
    case .max(let a, let b): return "pointwiseMax(\(vx(a, v, locals)), \(vx(b, v, locals)))"
    case .sqrt(let a): return "\(vx(a, v, locals)).squareRoot()"
    case .select(.fgt(let p, let q), let a, let b):
      return "\(vx(b, v, locals)).replacing(with: \(vx(a, v, locals)), where: \(vx(p, v, locals)) .> \(vx(q, v, locals)))"
    default: return splat(fx(e))
    }
  }

  mutating func vectorLoop(_ v: String, _ n: Int, _ body: [Stmt], _ locals: Set<String>) {
    line("do {  // \(lanes) lanes at a time over \(v)")
    depth += 1
    line("var \(v) = 0")
    if n >= lanes {
      line("while \(v) &+ \(lanes) <= \(n) {")
      depth += 1
      for s in body {
        switch s {
        case .local(let name, let e): line("let \(name)_v = \(vx(e, v, locals))")
        case .store(let b, let i, let e): line("storeVector(\(b.rawValue), \(ix(unitStride(i, v)!)) &+ \(v), \(vx(e, v, locals)))")
        default: break
        }
      }
      line("\(v) &+= \(lanes)")
      depth -= 1
      line("}")
    }
    line("while \(v) < \(n) {")
    depth += 1
    for s in body { stmt(s) }
    line("\(v) &+= 1")
    depth -= 1
    line("}")
    depth -= 1
    line("}")
  }
}
