/// Common subexpressions of one float expression, bound once each.
///
/// An op defined by a formula over `ActivationScalar` builds its kernel expression as a tree, so a value the
/// formula reads many times is repeated in it: GELU's rational erf reads the clamped x / sqrt 2 in every term of
/// two polynomials and their derivatives, hundreds of copies, which made the Swift back end's source untypeable
/// and both back ends' inputs large. Binding each repeated subexpression to a local keeps the work linear, and
/// binding what nests deeper than `maxDepth` keeps each statement one swiftc types quickly.
struct SubexpressionSharing {
  /// Occurrences of each subexpression once its repeated parents are shared (a repeated subtree's children are
  /// counted once: after sharing they are read once, inside its binding).
  private var counts: [FExpr: Int] = [:]
  private var bound: [FExpr: String] = [:]
  private(set) var bindings: [Stmt] = []

  /// `e` with each subexpression that occurs more than once (or nests deeper than `maxDepth`) read from a local;
  /// `bindings` holds the statements that declare them, each after those it reads. Constants, loads and locals
  /// are read where they occur. `name()` gives each local's name.
  static func share(_ e: FExpr, name: () -> String) -> (bindings: [Stmt], value: FExpr) {
    var s = SubexpressionSharing()
    s.count(e)
    let value = s.rewrite(e, name).0
    return (s.bindings, value)
  }

  private mutating func count(_ e: FExpr) {
    counts[e, default: 0] += 1
    guard counts[e] == 1 else { return }
    switch e {
    case .c, .load, .local, .ofInt, .learningRate: break
    case .add(let a, let b), .sub(let a, let b), .mul(let a, let b), .div(let a, let b), .max(let a, let b), .bf16Pair(let a, let b):
      count(a)
      count(b)
    case .exp(let a), .log(let a), .sqrt(let a), .round(let a), .fromInt32(let a): count(a)
    case .bytes(let a, let b, let c, let d): for x in [a, b, c, d] { count(x) }
    case .dotU8S8(let a, let b, let c, _): for x in [a, b, c] { count(x) }
    case .select(let c, let a, let b):
      count(c)
      count(a)
      count(b)
    }
  }

  private mutating func count(_ c: Cond) {
    switch c {
    case .fgt(let a, let b):
      count(a)
      count(b)
    case .and(let a, let b):
      count(a)
      count(b)
    case .ilt, .ieq, .uge: break
    }
  }

  /// Nesting depth past which a subexpression is bound to a local even when it occurs once: a polynomial by
  /// Horner's rule nests one level per term, and swiftc gives up type-checking vector expressions much deeper.
  static let maxDepth = 6

  /// `e` rewritten, and its depth in operations (locals, loads and constants are 0).
  private mutating func rewrite(_ e: FExpr, _ name: () -> String) -> (FExpr, Int) {
    if let local = bound[e] { return (.local(local), 0) }
    let rebuilt: FExpr, depth: Int
    func two(_ a: FExpr, _ b: FExpr, _ make: (FExpr, FExpr) -> FExpr) -> (FExpr, Int) {
      let (x, dx) = rewrite(a, name), (y, dy) = rewrite(b, name)
      return (make(x, y), Swift.max(dx, dy) + 1)
    }
    func one(_ a: FExpr, _ make: (FExpr) -> FExpr) -> (FExpr, Int) {
      let (x, dx) = rewrite(a, name)
      return (make(x), dx + 1)
    }
    switch e {
    case .c, .load, .local, .ofInt, .learningRate: return (e, 0)
    case .add(let a, let b): (rebuilt, depth) = two(a, b, FExpr.add)
    case .sub(let a, let b): (rebuilt, depth) = two(a, b, FExpr.sub)
    case .mul(let a, let b): (rebuilt, depth) = two(a, b, FExpr.mul)
    case .div(let a, let b): (rebuilt, depth) = two(a, b, FExpr.div)
    case .max(let a, let b): (rebuilt, depth) = two(a, b, FExpr.max)
    case .bf16Pair(let a, let b): (rebuilt, depth) = two(a, b, FExpr.bf16Pair)
    case .exp(let a): (rebuilt, depth) = one(a, FExpr.exp)
    case .log(let a): (rebuilt, depth) = one(a, FExpr.log)
    case .sqrt(let a): (rebuilt, depth) = one(a, FExpr.sqrt)
    case .round(let a): (rebuilt, depth) = one(a, FExpr.round)
    case .fromInt32(let a): (rebuilt, depth) = one(a, FExpr.fromInt32)
    case .bytes(let a, let b, let c, let d):
      let parts = [a, b, c, d].map { rewrite($0, name) }
      (rebuilt, depth) = (.bytes(parts[0].0, parts[1].0, parts[2].0, parts[3].0), parts.map(\.1).max()! + 1)
    case .dotU8S8(let a, let b, let c, let fit):
      let parts = [a, b, c].map { rewrite($0, name) }
      (rebuilt, depth) = (.dotU8S8(parts[0].0, parts[1].0, parts[2].0, pairsFit16: fit), parts.map(\.1).max()! + 1)
    case .select(let c, let a, let b):
      let (test, dc) = rewrite(c, name), (x, dx) = rewrite(a, name), (y, dy) = rewrite(b, name)
      (rebuilt, depth) = (.select(test, x, y), Swift.max(dc, dx, dy) + 1)
    }
    guard counts[e, default: 0] > 1 || depth > Self.maxDepth else { return (rebuilt, depth) }
    let local = name()
    bindings.append(.local(local, rebuilt))
    bound[e] = local
    return (.local(local), 0)
  }

  private mutating func rewrite(_ c: Cond, _ name: () -> String) -> (Cond, Int) {
    switch c {
    case .fgt(let a, let b):
      let (x, dx) = rewrite(a, name), (y, dy) = rewrite(b, name)
      return (.fgt(x, y), Swift.max(dx, dy) + 1)
    case .and(let a, let b):
      let (x, dx) = rewrite(a, name), (y, dy) = rewrite(b, name)
      return (.and(x, y), Swift.max(dx, dy) + 1)
    case .ilt, .ieq, .uge: return (c, 0)
    }
  }
}
