import GraphIR
import Lowering
import Passes
import CNNCTestSupport
import Testing

/// The lowering's own rules, without a back end: every op has a kernel, views take no storage, values whose
/// lifetimes do not overlap share the arena.
@Suite struct LoweringTests {
  @Test func everyOpHasALowering() {
    let missing = Op.definitions.filter { !hasLowering($0) }.map { $0.syntax.name }
    #expect(missing.isEmpty, "ops without a lowering: \(missing)")
    let names = Op.definitions.map { $0.syntax.name }
    #expect(Set(names).count == names.count, "two ops share a spelling: \(names)")
  }

  static let chain = """
    input x: f32[N, 4, 8, 8]
    input y: i32[N]
    a = sigmoid(x)
    b = tanh(a)
    c = leaky_relu(b)
    e = sigmoid(c)
    p = global_avgpool(e)
    f = flatten(p)
    d = dense(f, units: 3)
    loss = cross_entropy(d, y)
    output d
    minimize loss
    """

  @Test func flattenIsAViewAndDeadValuesShareTheArena() throws {
    let g = try Parser.parse(Self.chain, defaultName: "chain")
    let p = try lower(g, batch: 2, mode: .infer, target: Target.named("x86-64-v3", isa: .avx2))
    #expect(p.functions.count == 1)
    // a, b, c and e are 2*4*8*8 = 512 floats each; with reuse at most two are alive at once, and the
    // flatten of p (8 floats) takes no storage of its own.
    #expect(p.arenaFloats <= 2 * 512 + 64)
  }

  /// An activation written as a formula (GELU: a rational erf, read in its value and derivative) computes each
  /// subexpression once per element: no non-trivial subexpression occurs twice in its loop's statements.
  @Test func formulaActivationsComputeEachSubexpressionOnce() throws {
    let g = try Parser.parse("""
      input x: f32[N, 4]
      input y: i32[N]
      a = dense(x, units: 8)
      h = gelu(a)
      o = dense(h, units: 3)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """, defaultName: "gelu")
    let p = try lower(g, batch: 2, mode: .train(OptimizerSpec(kind: .sgd)), target: Target.named("x86-64-v3", isa: .avx2))
    // The innermost loops that store through locals: gelu's and gelu_grad's.
    var loops: [[Stmt]] = []
    func visit(_ body: [Stmt]) {
      for s in body {
        switch s {
        case .loop(_, _, let inner), .parallel(_, _, let inner), .region(_, let inner), .kernel(_, let inner), .when(_, let inner):
          if inner.contains(where: { if case .local = $0 { true } else { false } }) { loops.append(inner) } else { visit(inner) }
        default: continue
        }
      }
    }
    visit(p.functions.flatMap(\.body) + p.sharedKernels.flatMap(\.body))
    #expect(loops.count >= 2, "gelu and gelu_grad bind subexpressions to locals")
    for body in loops {
      var seen: [FExpr: Int] = [:]
      func walk(_ e: FExpr) {
        switch e {
        case .c, .load, .local, .ofInt, .learningRate: return
        default: seen[e, default: 0] += 1
        }
        for child in AnyExpr.float(e).children { if case .float(let f) = child { walk(f) } }
        if case .select(let c, _, _) = e, case .fgt(let l, let r) = c { walk(l); walk(r) }
      }
      for s in body {
        if case .local(_, let e) = s { walk(e) }
        if case .store(_, _, let e) = s { walk(e) }
      }
      let repeated = seen.filter { $0.value > 1 }
      #expect(repeated.isEmpty, "\(repeated.count) subexpressions computed more than once")
    }
  }

  /// An elementwise loop becomes full vectors and one masked block; loops it cannot widen (exp, an index
  /// that is not unit-stride) keep their scalar form.
  @Test func elementwiseLoopsBecomeFullAndPartialVectors() {
    let target = Target.named("x86-64-v3", isa: .avx2)
    let relu = Stmt.loop("i", 20, [.local("t", .load(.arena, .v("i") + 100)),
                                  .store(.arena, .v("i"), .max(.local("t"), .c(0)))])
    let expLoop = Stmt.loop("j", 20, [.store(.arena, .v("j"), .exp(.load(.arena, .v("j"))))])
    let strided = Stmt.loop("k", 20, [.store(.arena, .v("k") * 2, .c(1))])
    let out = vectorizeElementwiseLoops([.region("r", [relu, expLoop, strided])], lanes: target.lanes)
    guard case .region(_, let body) = out.first else { Issue.record("lost the region"); return }
    #expect(body.count == 4)
    let lane8 = Stmt.loop("i", 2, [.vlocal("t_v", .load(.arena, .v("i") * 8 + 100, lanes: 8)),
                                   .vstore(.arena, .v("i") * 8, .max(.local("t_v"), .broadcast(.c(0))), lanes: 8)])
    let first: IExpr = .v("i") + 16
    let tail = Stmt.loop("i", 1, [.vlocal("t_v", .load(.arena, first + 100, lanes: 4)),
                                  .vstore(.arena, first, .max(.local("t_v"), .broadcast(.c(0))), lanes: 4)])
    #expect(body[0] == lane8)
    #expect(body[1] == tail)
    #expect(body[2] == expLoop && body[3] == strided)
  }

  /// Equal layers share one kernel function, called with the offsets that differ; one parameter per
  /// tensor that moves, not per index expression; a layer of another shape keeps its own code.
  @Test func equalLayersShareOneKernel() throws {
    let g = try Parser.parse("""
      input image: f32[N, 1, 8, 8]
      input label: i32[N]
      c0 = conv2d(image, filters: 4, kernel: 3, padding: 1)
      c1 = conv2d(c0, filters: 4, kernel: 3, padding: 1)
      c2 = conv2d(c1, filters: 4, kernel: 3, padding: 1)
      c3 = conv2d(c2, filters: 4, kernel: 3, padding: 1)
      c4 = conv2d(c3, filters: 6, kernel: 3, padding: 1)
      f = flatten(c4)
      fc = dense(f, units: 10)
      loss = cross_entropy(fc, label)
      output fc
      minimize loss
      """, defaultName: "chain")
    let p = try lower(g, batch: 2, mode: .train(OptimizerSpec(kind: .adam)), target: Target.named("x86-64-v3", isa: .avx2))
    var calls: [String: [String]] = [:]
    for case .kernel(let name, let body) in p.functions[0].body {
      for case .call(let shared, let values) in body {
        calls[name] = [shared]
        #expect(values.count == p.sharedKernels.first { $0.name == shared }!.parameters.count)
      }
    }
    #expect(calls["c2"] != nil && calls["c1"] == calls["c2"] && calls["c2"] == calls["c3"], "\(calls.sorted { $0.key < $1.key })")
    #expect(calls["c4"] == nil || calls["c4"] != calls["c3"])
    #expect(p.sharedKernels.allSatisfy { $0.parameters.count <= 6 }, "\(p.sharedKernels.map { ($0.name, $0.parameters.count) })")
    let plain = try lower(g, batch: 2, mode: .train(OptimizerSpec(kind: .adam)), target: Target.named("x86-64-v3", isa: .avx2), share: false)
    #expect(plain.sharedKernels.isEmpty)
    #expect(p.listing.count < plain.listing.count)
  }

  /// Inference programs fold their batch norms and move the fold before the conv; the state keeps the
  /// source graph's layout, the one the training program and the checkpoints use.
  @Test func foldedInferenceProgramsKeepTheTrainingLayout() throws {
    let g = try Parser.parse(try String(contentsOf: Fixtures.graphs.appendingPathComponent("resnet8.graph"), encoding: .utf8), defaultName: "resnet8")
    let target = Target.named("x86-64-v3", isa: .avx2)
    let train = try lower(g, batch: 2, mode: .train(OptimizerSpec(kind: .adam)), target: target)
    let infer = try lower(g, batch: 2, mode: .infer, target: target)
    #expect(infer.listing.contains("batchnorm_fold"))
    #expect(infer.parameters.map(\.name) == train.parameters.map(\.name))
    #expect(infer.parameters.map(\.offset) == train.parameters.map(\.offset))
    #expect(infer.buffers.map(\.offset) == train.buffers.map(\.offset))
    #expect(infer.parameterFloats == train.parameterFloats && infer.bufferFloats == train.bufferFloats)
  }
}
