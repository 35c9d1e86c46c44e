/// Analyses of kernel-IR statements that renderers read, so they only render.
extension Stmt {
  /// The vector locals this statement assigns after declaring them (a renderer declares those mutable).
  public var vectorsSet: [String] {
    switch self {
    case .vset(let n, _): [n]
    case .loop(_, _, let body), .when(_, let body), .region(_, let body), .kernel(_, let body): body.flatMap(\.vectorsSet)
    case .store, .accumulate, .local, .set, .ulocal, .gemm, .comment, .vlocal, .vstore, .tick: []
    }
  }

  /// Every buffer this statement reads or writes (a renderer binds only those).
  public var basesUsed: [Base] {
    switch self {
    case .comment: []
    case .tick: [.arena]
    case .region(_, let body), .kernel(_, let body), .loop(_, _, let body): body.flatMap(\.basesUsed)
    case .when(let c, let body): c.basesUsed + body.flatMap(\.basesUsed)
    case .store(let b, let x, let e), .accumulate(let b, let x, let e): [b] + x.basesUsed + e.basesUsed
    case .local(_, let e), .set(_, let e): e.basesUsed
    case .ulocal(_, let u): u.basesUsed
    case .vlocal(_, let e), .vset(_, let e): e.basesUsed
    case .vstore(let b, let x, let e, _): [b] + x.basesUsed + e.basesUsed
    case .gemm(let g): [g.a.0, g.b.0, g.c.0] + g.a.1.basesUsed + g.b.1.basesUsed + g.c.1.basesUsed
    }
  }
}

extension IExpr {
  /// The buffers the expression reads.
  public var basesUsed: [Base] {
    switch self {
    case .c, .v, .step: []
    case .add(let a, let b), .mul(let a, let b): a.basesUsed + b.basesUsed
    case .div(let a, _), .rem(let a, _): a.basesUsed
    case .label(let x): [.labels] + x.basesUsed
    case .ofFloat(let f): f.basesUsed
    }
  }
}

extension FExpr {
  /// The buffers the expression reads.
  public var basesUsed: [Base] {
    switch self {
    case .c, .local, .learningRate: []
    case .load(let b, let x): [b] + x.basesUsed
    case .add(let a, let b), .sub(let a, let b), .mul(let a, let b), .div(let a, let b), .max(let a, let b): a.basesUsed + b.basesUsed
    case .exp(let a), .log(let a), .sqrt(let a): a.basesUsed
    case .select(let c, let a, let b): c.basesUsed + a.basesUsed + b.basesUsed
    case .ofInt(let x): x.basesUsed
    }
  }
}

extension VExpr {
  /// The buffers the expression reads.
  public var basesUsed: [Base] {
    switch self {
    case .zero, .local: []
    case .load(let b, let x, _): [b] + x.basesUsed
    case .broadcast(let f): f.basesUsed
    case .fma(let a, let b, let c): a.basesUsed + b.basesUsed + c.basesUsed
    }
  }
}

extension Cond {
  /// The buffers the condition reads.
  public var basesUsed: [Base] {
    switch self {
    case .ilt(let a, let b), .ieq(let a, let b): a.basesUsed + b.basesUsed
    case .fgt(let a, let b): a.basesUsed + b.basesUsed
    case .and(let a, let b): a.basesUsed + b.basesUsed
    case .uge(let a, let b): a.basesUsed + b.basesUsed
    }
  }
}

extension UExpr {
  /// The buffers the expression reads.
  public var basesUsed: [Base] {
    switch self {
    case .c, .seed, .step, .local: []
    case .index(let i): i.basesUsed
    case .xor(let a, let b), .add(let a, let b), .mul(let a, let b): a.basesUsed + b.basesUsed
    case .shr(let a, _): a.basesUsed
    }
  }
}
