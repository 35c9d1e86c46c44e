/// Analyses of kernel-IR statements that renderers read, so they only render.
extension Stmt {
  /// The vector locals this statement assigns after declaring them (a renderer declares those mutable).
  public var vectorsSet: [String] {
    switch self {
    case .vset(let n, _): [n]
    case .loop(_, _, let body), .when(_, let body), .region(_, let body), .kernel(_, let body), .parallel(_, _, let body), .scalarLoops(let body):
      body.flatMap(\.vectorsSet)
    case .store, .accumulate, .local, .set, .ulocal, .gemm, .comment, .vlocal, .vstore, .tick, .call: []
    }
  }

  /// Every buffer this statement reads or writes (a renderer binds only those).
  public var basesUsed: [Base] {
    switch self {
    case .comment, .call: []  // a shared kernel binds its own buffers
    case .tick: [.arena]
    case .region(_, let body), .kernel(_, let body), .loop(_, _, let body), .parallel(_, _, let body), .scalarLoops(let body): body.flatMap(\.basesUsed)
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
    case .load(let b, let x, _): [b] + x.basesUsed
    case .broadcast(let f): f.basesUsed
    case .zero, .local, .fma, .add, .sub, .mul, .div, .max, .sqrt, .selectGreater: operands.flatMap(\.basesUsed)
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

/// The index variables each expression reads, in order of use (repeats kept).
extension IExpr {
  public var variables: [String] {
    switch self {
    case .c, .step: []
    case .v(let n): [n]
    case .add(let a, let b), .mul(let a, let b): a.variables + b.variables
    case .div(let a, _), .rem(let a, _), .label(let a): a.variables
    case .ofFloat(let f): f.variables
    }
  }
}

extension FExpr {
  public var variables: [String] {
    switch self {
    case .c, .local, .learningRate: []
    case .load(_, let i), .ofInt(let i): i.variables
    case .add(let a, let b), .sub(let a, let b), .mul(let a, let b), .div(let a, let b), .max(let a, let b): a.variables + b.variables
    case .exp(let a), .log(let a), .sqrt(let a): a.variables
    case .select(let c, let a, let b): c.variables + a.variables + b.variables
    }
  }
}

extension Cond {
  public var variables: [String] {
    switch self {
    case .ilt(let a, let b), .ieq(let a, let b): a.variables + b.variables
    case .fgt(let a, let b): a.variables + b.variables
    case .and(let a, let b): a.variables + b.variables
    case .uge(let a, let b): a.variables + b.variables
    }
  }
}

extension UExpr {
  public var variables: [String] {
    switch self {
    case .c, .seed, .step, .local: []
    case .index(let i): i.variables
    case .xor(let a, let b), .add(let a, let b), .mul(let a, let b): a.variables + b.variables
    case .shr(let a, _): a.variables
    }
  }
}

extension VExpr {
  public var variables: [String] {
    switch self {
    case .load(_, let i, _): i.variables
    case .broadcast(let f): f.variables
    case .zero, .local, .fma, .add, .sub, .mul, .div, .max, .sqrt, .selectGreater: operands.flatMap(\.variables)
    }
  }
}
