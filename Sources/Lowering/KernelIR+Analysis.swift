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

/// Any kernel-IR expression, for one traversal over all five kinds: each kind says only what its node holds
/// itself (`children`, the buffer it reads, the index variable it is), and `fold` walks the tree.
public enum AnyExpr: Sendable {
  case index(IExpr), float(FExpr), vector(VExpr), condition(Cond), bits(UExpr)

  /// The sub-expressions, in the order they are written.
  public var children: [AnyExpr] {
    switch self {
    case .index(let e):
      switch e {
      case .c, .v, .step: []
      case .add(let a, let b), .mul(let a, let b): [.index(a), .index(b)]
      case .div(let a, _), .rem(let a, _), .label(let a): [.index(a)]
      case .ofFloat(let f): [.float(f)]
      }
    case .float(let e):
      switch e {
      case .c, .local, .learningRate: []
      case .load(_, let x), .ofInt(let x): [.index(x)]
      case .add(let a, let b), .sub(let a, let b), .mul(let a, let b), .div(let a, let b), .max(let a, let b), .bf16Pair(let a, let b):
        [.float(a), .float(b)]
      case .exp(let a), .log(let a), .sqrt(let a), .round(let a), .fromInt32(let a): [.float(a)]
      case .bytes(let a, let b, let c, let d): [.float(a), .float(b), .float(c), .float(d)]
      case .dotU8S8(let a, let b, let c, _): [.float(a), .float(b), .float(c)]
      case .select(let c, let a, let b): [.condition(c), .float(a), .float(b)]
      }
    case .vector(let e):
      switch e {
      case .load(_, let x, _): [.index(x)]
      case .broadcast(let f): [.float(f)]
      case .zero, .local, .fma, .add, .sub, .mul, .div, .max, .sqrt, .selectGreater, .bf16Pair, .bf16Pack, .dotBF16, .round, .bytes, .fromInt32,
           .dotU8S8, .packBytes: e.operands.map(AnyExpr.vector)
      }
    case .condition(let e):
      switch e {
      case .ilt(let a, let b), .ieq(let a, let b): [.index(a), .index(b)]
      case .fgt(let a, let b): [.float(a), .float(b)]
      case .and(let a, let b): [.condition(a), .condition(b)]
      case .uge(let a, let b): [.bits(a), .bits(b)]
      }
    case .bits(let e):
      switch e {
      case .c, .seed, .step, .local: []
      case .index(let i): [.index(i)]
      case .xor(let a, let b), .add(let a, let b), .mul(let a, let b): [.bits(a), .bits(b)]
      case .shr(let a, _): [.bits(a)]
      }
    }
  }

  /// The buffer this node itself reads (a load, or the labels).
  var base: Base? {
    switch self {
    case .index(.label): .labels
    case .float(.load(let b, _)), .vector(.load(let b, _, _)): b
    default: nil
    }
  }

  /// The index variable this node is.
  var variable: String? {
    if case .index(.v(let n)) = self { return n }
    return nil
  }

  /// `combine` over every node, each before its children (pre-order).
  public func fold<T>(_ initial: T, _ combine: (T, AnyExpr) -> T) -> T {
    children.reduce(combine(initial, self)) { $1.fold($0, combine) }
  }

  /// The buffers the expression reads, in order of use.
  public var basesUsed: [Base] { fold([]) { out, e in e.base.map { out + [$0] } ?? out } }
  /// The index variables it reads, in order of use (repeats kept).
  public var variables: [String] { fold([]) { out, e in e.variable.map { out + [$0] } ?? out } }
}

extension IExpr {
  public var basesUsed: [Base] { AnyExpr.index(self).basesUsed }
  public var variables: [String] { AnyExpr.index(self).variables }
}

extension FExpr {
  public var basesUsed: [Base] { AnyExpr.float(self).basesUsed }
  public var variables: [String] { AnyExpr.float(self).variables }
}

extension VExpr {
  public var basesUsed: [Base] { AnyExpr.vector(self).basesUsed }
  public var variables: [String] { AnyExpr.vector(self).variables }
}

extension Cond {
  public var basesUsed: [Base] { AnyExpr.condition(self).basesUsed }
  public var variables: [String] { AnyExpr.condition(self).variables }
}

extension UExpr {
  public var basesUsed: [Base] { AnyExpr.bits(self).basesUsed }
  public var variables: [String] { AnyExpr.bits(self).variables }
}
