/// One function for kernels that differ only in where their tensors live.
///
/// Layers of one shape (a stack of equal convolutions, the blocks of a residual network) lower to kernels
/// whose code is the same but for the buffer offsets folded into their index expressions. Compiling every
/// copy makes JIT time grow with the number of layers times the code of one; sharing makes it grow with
/// the number of distinct layer shapes. Two kernels share when their statements are equal once the
/// additive integer constants of index expressions (terms of a sum, never a factor, divisor or loop bound)
/// are set aside; the constants that differ between them become the shared kernel's `Int` parameters, the
/// ones that agree stay constants. Each copy's `.kernel` then holds its comments and one `.call` with its
/// own values. The arithmetic is unchanged: every value is computed by the same statements in the same order.
public func shareIdenticalKernels(_ program: Program) -> Program {
  var p = program
  // Kernels are grouped by their canonical statements (names numbered, additive constants set aside).
  var groups: [[Stmt]: [(function: Int, statement: Int, constants: [Int])]] = [:]
  var order: [[Stmt]] = []
  for (f, function) in program.functions.enumerated() {
    for (i, s) in function.body.enumerated() {
      guard case .kernel(_, let body) = s, body.reduce(0, { $0 + $1.size }) >= minimumSharedSize else { continue }
      let canonical = CanonicalKernel { slot, _ in .v(sharedParameter(slot)) }
      let key = canonical.rewrite(body.filter { !$0.isComment })
      if groups[key] == nil { order.append(key) }
      groups[key, default: []].append((f, i, canonical.constants))
    }
  }
  for key in order {
    guard let members = groups[key], members.count >= minimumSharedCopies else { continue }
    let first = members[0]
    guard case .kernel(let firstName, let firstBody) = program.functions[first.function].body[first.statement] else { continue }
    let (parameterSlots, rule) = parameters(members.map(\.constants))
    let body = CanonicalKernel { slot, k in
      guard let (parameter, delta) = rule[slot] else { return .c(k) }
      return delta == 0 ? .v(sharedParameter(parameter)) : .add(.v(sharedParameter(parameter)), .c(delta))
    }.rewrite(firstBody.filter { !$0.isComment })
    let name = "\(program.functions[first.function].name)_shared\(p.sharedKernels.count)_\(firstName)"
    p.sharedKernels.append(SharedKernel(name: name, parameters: parameterSlots.indices.map(sharedParameter), body: body))
    for m in members {
      guard case .kernel(let kernelName, let kernelBody) = program.functions[m.function].body[m.statement] else { continue }
      p.functions[m.function].body[m.statement] = .kernel(kernelName, kernelBody.filter(\.isComment) + [.call(name, parameterSlots.map { m.constants[$0] })])
    }
  }
  return p
}

/// The parameters of a shared kernel from its copies' constants (`constants[copy][slot]`): a constant all
/// copies agree on stays a constant, so the code is as specialised as before; the others are a parameter
/// plus a constant, one parameter per pattern of differences between the copies (in practice one per
/// tensor whose place moves, however many index expressions read it). Returns each parameter's slot, whose
/// value a call passes, and for each varying slot its parameter and the constant added to it.
func parameters(_ constants: [[Int]]) -> (slots: [Int], rule: [Int: (parameter: Int, delta: Int)]) {
  let first = constants[0]
  var slots: [Int] = [], byPattern: [[Int]: Int] = [:], rule: [Int: (parameter: Int, delta: Int)] = [:]
  for i in first.indices where constants.contains(where: { $0[i] != first[i] }) {
    let pattern = constants.map { $0[i] - first[i] }
    if let p = byPattern[pattern] {
      rule[i] = (p, first[i] - first[slots[p]])
    } else {
      byPattern[pattern] = slots.count
      rule[i] = (slots.count, 0)
      slots.append(i)
    }
  }
  return (slots, rule)
}

/// The fewest equal kernels worth one shared function: two already halve their code.
public let minimumSharedCopies = 2

/// The fewest statements a kernel must have to be shared. Smaller kernels (an elementwise loop or two)
/// cost little to compile and are bound by memory, where the constant offsets pay: with them the
/// optimiser proves that the tensors a loop reads and writes do not overlap, and a shared copy has to
/// check at run time instead (8% of a training step of Graphs/residual.graph on Zen 4 when its
/// activations and their gradients shared). Convolutions, the kernels that cost JIT time, are far larger.
public let minimumSharedSize = 24

/// The name of a shared kernel's parameter for the `slot`-th additive constant, and of its `i`-th bound
/// name (loop variable, local, region): canonical names, so kernels that differ only in the names the
/// lowering made up compare equal.
func sharedParameter(_ slot: Int) -> String { "shared\(slot)_" }
func canonicalName(_ i: Int) -> String { "b\(i)_" }

extension Stmt {
  var isComment: Bool { if case .comment = self { true } else { false } }
}

/// A kernel's statements in canonical form: every name it binds renamed in order of declaration (scoped
/// as the statements scope them), and every additive integer constant of its index expressions, in a fixed
/// order, recorded in `constants` and replaced by `replace(slot, value)`.
final class CanonicalKernel {
  let replace: (Int, Int) -> IExpr
  private(set) var constants: [Int] = []
  private var scopes: [[String: String]] = [[:]]
  private var declared = 0

  init(_ replace: @escaping (Int, Int) -> IExpr) { self.replace = replace }

  func rewrite(_ body: [Stmt]) -> [Stmt] { body.map(rewrite) }

  /// `body` in a scope of its own, with `bound` declared in it first.
  func scoped(_ bound: String?, _ body: [Stmt]) -> (String?, [Stmt]) {
    scopes.append([:])
    defer { scopes.removeLast() }
    return (bound.map(declare), rewrite(body))
  }

  func declare(_ name: String) -> String {
    defer { declared += 1 }
    scopes[scopes.count - 1][name] = canonicalName(declared)
    return canonicalName(declared)
  }

  func name(_ n: String) -> String { scopes.reversed().lazy.compactMap { $0[n] }.first ?? n }

  func constant(_ k: Int) -> IExpr {
    constants.append(k)
    return replace(constants.count - 1, k)
  }

  func rewrite(_ s: Stmt) -> Stmt {
    switch s {
    case .loop(let v, let n, let body):
      let (w, inner) = scoped(v, body)
      return .loop(w!, n, inner)
    case .parallel(let v, let n, let body):
      let (w, inner) = scoped(v, body)
      return .parallel(w!, n, inner)
    case .scalarLoops(let body): return .scalarLoops(scoped(nil, body).1)
    case .store(let b, let i, let e): return .store(b, index(i), float(e))
    case .accumulate(let b, let i, let e): return .accumulate(b, index(i), float(e))
    case .local(let n, let e): return { let v = float(e); return .local(declare(n), v) }()
    case .set(let n, let e): return .set(name(n), float(e))
    case .when(let c, let body): return { let c = cond(c); return .when(c, scoped(nil, body).1) }()
    case .gemm(let g): return .gemm(gemm(g))
    case .comment, .tick, .call: return s
    case .vlocal(let n, let e): return { let v = vector(e); return .vlocal(declare(n), v) }()
    case .vset(let n, let e): return .vset(name(n), vector(e))
    case .vstore(let b, let i, let e, let lanes): return .vstore(b, index(i), vector(e), lanes: lanes)
    case .ulocal(let n, let u): return { let v = unsigned(u); return .ulocal(declare(n), v) }()
    case .region(let name, let body): return { let r = declare(name); return .region(r, scoped(nil, body).1) }()
    case .kernel(let name, let body): return .kernel(name, scoped(nil, body).1)
    }
  }

  func gemm(_ g: Gemm) -> Gemm {
    var g = g
    (g.a.1, g.b.1, g.c.1) = (index(g.a.1), index(g.b.1), index(g.c.1))
    return g
  }

  /// Constants in a sum are offsets; under a product, quotient or remainder they are strides and sizes,
  /// which stay. A sum becomes its other terms in order plus one constant, its constants' total (zero
  /// too: a tensor at offset 0 folded its offset away, and must still match one elsewhere); wrapping
  /// integer addition gives the same index in any order.
  func index(_ e: IExpr, additive: Bool = true) -> IExpr {
    if additive {
      var terms: [IExpr] = [], total = 0
      func collect(_ e: IExpr) {
        switch e {
        case .add(let a, let b): collect(a); collect(b)
        case .c(let k): total &+= k
        default: terms.append(e)
        }
      }
      collect(e)
      let rest = terms.map { term(index: $0) }
      let k = constant(total)
      return rest.isEmpty ? k : .add(rest.dropFirst().reduce(rest[0]) { .add($0, $1) }, k)
    }
    switch e {
    case .c: return e
    case .add(let a, let b): return .add(index(a, additive: false), index(b, additive: false))
    default: return term(index: e)
    }
  }

  /// A term of a sum other than a constant or a sum.
  func term(index e: IExpr) -> IExpr {
    switch e {
    case .c, .add: index(e, additive: false)
    case .v(let n): .v(name(n))
    case .step: e
    case .mul(let a, let b): .mul(index(a, additive: false), index(b, additive: false))
    case .div(let a, let n): .div(index(a, additive: false), n)
    case .rem(let a, let n): .rem(index(a, additive: false), n)
    case .label(let a): .label(index(a))
    case .ofFloat(let f): .ofFloat(float(f))
    }
  }

  func float(_ e: FExpr) -> FExpr {
    switch e {
    case .c, .learningRate: e
    case .local(let n): .local(name(n))
    case .load(let b, let i): .load(b, index(i))
    case .add(let a, let b): .add(float(a), float(b))
    case .sub(let a, let b): .sub(float(a), float(b))
    case .mul(let a, let b): .mul(float(a), float(b))
    case .div(let a, let b): .div(float(a), float(b))
    case .max(let a, let b): .max(float(a), float(b))
    case .exp(let a): .exp(float(a))
    case .log(let a): .log(float(a))
    case .sqrt(let a): .sqrt(float(a))
    case .select(let c, let a, let b): .select(cond(c), float(a), float(b))
    case .ofInt(let i): .ofInt(index(i))
    case .bf16Pair(let a, let b): .bf16Pair(float(a), float(b))
    case .round(let a): .round(float(a))
    case .fromInt32(let a): .fromInt32(float(a))
    case .bytes(let a, let b, let c, let d): .bytes(float(a), float(b), float(c), float(d))
    case .dotU8S8(let acc, let a, let b, let fit): .dotU8S8(float(acc), float(a), float(b), pairsFit16: fit)
    }
  }

  func cond(_ c: Cond) -> Cond {
    switch c {
    case .ilt(let a, let b): .ilt(index(a), index(b))
    case .ieq(let a, let b): .ieq(index(a), index(b))
    case .fgt(let a, let b): .fgt(float(a), float(b))
    case .and(let a, let b): .and(cond(a), cond(b))
    case .uge(let a, let b): .uge(unsigned(a), unsigned(b))
    }
  }

  func unsigned(_ u: UExpr) -> UExpr {
    switch u {
    case .c, .seed, .step: u
    case .local(let n): .local(name(n))
    case .index(let i): .index(index(i))
    case .xor(let a, let b): .xor(unsigned(a), unsigned(b))
    case .add(let a, let b): .add(unsigned(a), unsigned(b))
    case .mul(let a, let b): .mul(unsigned(a), unsigned(b))
    case .shr(let a, let k): .shr(unsigned(a), k)
    }
  }

  func vector(_ e: VExpr) -> VExpr {
    switch e {
    case .zero: e
    case .local(let n): .local(name(n))
    case .load(let b, let i, let lanes): .load(b, index(i), lanes: lanes)
    case .broadcast(let f): .broadcast(float(f))
    case .fma(let a, let b, let c): .fma(vector(a), vector(b), vector(c))
    case .add(let a, let b): .add(vector(a), vector(b))
    case .sub(let a, let b): .sub(vector(a), vector(b))
    case .mul(let a, let b): .mul(vector(a), vector(b))
    case .div(let a, let b): .div(vector(a), vector(b))
    case .max(let a, let b): .max(vector(a), vector(b))
    case .sqrt(let a): .sqrt(vector(a))
    case .selectGreater(let p, let q, let a, let b): .selectGreater(vector(p), vector(q), vector(a), vector(b))
    case .bf16Pair(let a, let b): .bf16Pair(vector(a), vector(b))
    case .bf16Pack(let a, let b): .bf16Pack(vector(a), vector(b))
    case .dotBF16(let acc, let a, let b): .dotBF16(vector(acc), vector(a), vector(b))
    case .round(let a): .round(vector(a))
    case .fromInt32(let a): .fromInt32(vector(a))
    case .bytes(let a, let b, let c, let d): .bytes(vector(a), vector(b), vector(c), vector(d))
    case .dotU8S8(let acc, let a, let b, let fit): .dotU8S8(vector(acc), vector(a), vector(b), pairsFit16: fit)
    case .packBytes(let a, let b, let c, let d): .packBytes(vector(a), vector(b), vector(c), vector(d))
    }
  }
}
