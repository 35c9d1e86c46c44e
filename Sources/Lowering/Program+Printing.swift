/// A readable listing of a lowered program (`cnnc dump-ir --stage lowered`).
extension Program {
  public var listing: String {
    var out = "# program \(graphName), batch \(batch): arena \(arenaFloats) floats, \(parameterFloats) parameter floats\n"
    out += "#   target \(target)\n"
    for c in convs { out += "#   conv \(c.node): \(c.label) (\(c.reason))\n" }
    for g in gemms { out += "#   gemm \(g.node) \(g.m)x\(g.n)x\(g.k): \(g.rows) rows x \(g.vectors) vectors, K panel \(g.kPanel)\n" }
    for p in parameters { out += "#   param \(p.name) \(p.shape) at \(p.offset)\n" }
    out += "#   output at \(output.base.rawValue)+\(output.offset) (\(output.count) floats)\n"
    if let l = loss { out += "#   loss at \(l.base.rawValue)+\(l.offset)\n" }
    for k in sharedKernels {
      let parameters = EntryABI.parameterList.dropLast() + k.parameters.map { ", \($0)" }.joined() + ")"
      out += "func \(k.name)\(parameters) {\n"
      for s in k.body { out += Self.list(s, depth: 1) }
      out += "}\n"
    }
    for f in functions {
      out += "func \(f.name)\(EntryABI.parameterList) {\n"
      for s in f.body { out += Self.list(s, depth: 1) }
      out += "}\n"
    }
    return out
  }

  static func list(_ s: Stmt, depth: Int) -> String {
    let pad = String(repeating: "  ", count: depth)
    switch s {
    case .comment(let c): return "\(pad)# \(c)\n"
    case .tick(let k): return "\(pad)tick(\(k))\n"
    case .call(let name, let values): return "\(pad)\(name)(\(values.map(String.init).joined(separator: ", ")))\n"
    case .kernel(_, let body): return body.map { list($0, depth: depth) }.joined()  // headed by its comment
    case .region(let name, let body):
      return "\(pad)region \(name)(\(Stmt.freeVariables(body).joined(separator: ", "))) {\n" + body.map { list($0, depth: depth + 1) }.joined() + "\(pad)}\n"
    case .loop(let v, let n, let body): return "\(pad)for \(v) in 0..<\(n) {\n" + body.map { list($0, depth: depth + 1) }.joined() + "\(pad)}\n"
    case .scalarLoops(let body):
      return "\(pad)scalar loops {\n" + body.map { list($0, depth: depth + 1) }.joined() + "\(pad)}\n"
    case .parallel(let v, let n, let body):
      return "\(pad)parallel for \(v) in 0..<\(n) {\n" + body.map { list($0, depth: depth + 1) }.joined() + "\(pad)}\n"
    case .store(let b, let i, let e): return "\(pad)\(b.rawValue)[\(i.text)] = \(e.text)\n"
    case .accumulate(let b, let i, let e): return "\(pad)\(b.rawValue)[\(i.text)] += \(e.text)\n"
    case .local(let n, let e): return "\(pad)var \(n) = \(e.text)\n"
    case .set(let n, let e): return "\(pad)\(n) = \(e.text)\n"
    case .ulocal(let n, let u): return "\(pad)let \(n): u64 = \(u.text)\n"
    case .when(let c, let body): return "\(pad)if \(c.text) {\n" + body.map { list($0, depth: depth + 1) }.joined() + "\(pad)}\n"
    case .vlocal(let n, let e): return "\(pad)vector \(n) = \(e.text)\n"
    case .vset(let n, let e): return "\(pad)\(n) = \(e.text)\n"
    case .vstore(let b, let i, let e, let lanes): return "\(pad)\(b.rawValue)[\(i.text) +: \(lanes)] = \(e.text)\n"
    case .gemm(let g):
      return "\(pad)gemm(\(g.m)x\(g.n)x\(g.k), A=\(g.a.0.rawValue)+\(g.a.1.text)\(g.transA ? "^T" : ""), B=\(g.b.0.rawValue)+\(g.b.1.text)\(g.transB ? "^T" : ""), "
        + "C=\(g.c.0.rawValue)+\(g.c.1.text), beta=\(g.beta))\n"
    }
  }
}

extension IExpr {
  var text: String {
    switch self {
    case .c(let v): "\(v)"
    case .v(let n): n
    case .add(let a, let b): "\(a.text) + \(b.text)"
    case .mul(let a, let b): "\(a.factor)*\(b.factor)"
    case .div(let a, let d): "\(a.factor)/\(d)"
    case .rem(let a, let d): "\(a.factor)%\(d)"
    case .label(let i): "labels[\(i.text)]"
    case .ofFloat(let f): "int(\(f.text))"
    case .step: "step"
    }
  }
  var factor: String { if case .add = self { "(\(text))" } else { text } }
}

extension FExpr {
  var text: String {
    switch self {
    case .c(let v): "\(v)"
    case .load(let b, let i): "\(b.rawValue)[\(i.text)]"
    case .local(let n): n
    case .add(let a, let b): "(\(a.text) + \(b.text))"
    case .sub(let a, let b): "(\(a.text) - \(b.text))"
    case .mul(let a, let b): "\(a.text) * \(b.text)"
    case .div(let a, let b): "\(a.text) / \(b.text)"
    case .max(let a, let b): "max(\(a.text), \(b.text))"
    case .exp(let a): "exp(\(a.text))"
    case .log(let a): "log(\(a.text))"
    case .sqrt(let a): "sqrt(\(a.text))"
    case .select(let c, let a, let b): "(\(c.text) ? \(a.text) : \(b.text))"
    case .ofInt(let i): "float(\(i.text))"
    case .learningRate: "lr"
    case .bf16Pair(let a, let b): "bf16_pair(\(a.text), \(b.text))"
    case .round(let a): "round(\(a.text))"
    case .bytes(let a, let b, let c, let d): "bytes(\(a.text), \(b.text), \(c.text), \(d.text))"
    case .fromInt32(let a): "from_int32(\(a.text))"
    case .dotU8S8(let acc, let a, let b, let fit): "dot_u8s8\(fit ? "_narrow" : "")(\(acc.text), \(a.text), \(b.text))"
    }
  }
}

extension VExpr {
  var text: String {
    switch self {
    case .zero: "0"
    case .load(let b, let i, let lanes): "\(b.rawValue)[\(i.text) +: \(lanes)]"
    case .broadcast(let f): "broadcast(\(f.text))"
    case .local(let n): n
    case .fma(let a, let b, let c): "fma(\(a.text), \(b.text), \(c.text))"
    case .add(let a, let b): "(\(a.text) + \(b.text))"
    case .sub(let a, let b): "(\(a.text) - \(b.text))"
    case .mul(let a, let b): "(\(a.text) * \(b.text))"
    case .div(let a, let b): "(\(a.text) / \(b.text))"
    case .max(let a, let b): "max(\(a.text), \(b.text))"
    case .sqrt(let a): "sqrt(\(a.text))"
    case .selectGreater(let p, let q, let a, let b): "select(\(p.text) > \(q.text), \(a.text), \(b.text))"
    case .bf16Pair(let a, let b): "bf16_pair(\(a.text), \(b.text))"
    case .round(let a): "round(\(a.text))"
    case .bytes(let a, let b, let c, let d): "bytes(\(a.text), \(b.text), \(c.text), \(d.text))"
    case .fromInt32(let a): "from_int32(\(a.text))"
    case .dotU8S8(let acc, let a, let b, let fit): "dot_u8s8\(fit ? "_narrow" : "")(\(acc.text), \(a.text), \(b.text))"
    case .bf16Pack(let a, let b): "bf16_pack(\(a.text), \(b.text))"
    case .dotBF16(let acc, let a, let b): "dot_bf16(\(acc.text), \(a.text), \(b.text))"
    case .packBytes(let a, let b, let c, let d): "pack_bytes(\(a.text), \(b.text), \(c.text), \(d.text))"
    }
  }
}

extension Cond {
  var text: String {
    switch self {
    case .ilt(let a, let b): "\(a.text) < \(b.text)"
    case .ieq(let a, let b): "\(a.text) == \(b.text)"
    case .fgt(let a, let b): "\(a.text) > \(b.text)"
    case .and(let a, let b): "\(a.text) && \(b.text)"
    case .uge(let a, let b): "\(a.text) >= \(b.text)"
    }
  }
}

extension UExpr {
  var text: String {
    switch self {
    case .c(let v): "0x\(String(v, radix: 16))"
    case .seed: "seed"
    case .step: "step"
    case .index(let i): "u64(\(i.text))"
    case .local(let n): n
    case .xor(let a, let b): "(\(a.text) ^ \(b.text))"
    case .add(let a, let b): "(\(a.text) + \(b.text))"
    case .mul(let a, let b): "(\(a.text) * \(b.text))"
    case .shr(let a, let k): "(\(a.text) >> \(k))"
    }
  }
}
