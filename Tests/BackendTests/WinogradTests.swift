import CNNCTestSupport
import GraphIR
import LLVMBackend
import Lowering
import Passes
import Runtime
import Testing

/// Winograd F(2x2, 3x3) in all three conv passes, and F(4x4, 3x3) at inference, against the reference interpreter in
/// Double: every pass's error is within a stated bound, and within a small factor of im2col's on the same data.
@Suite struct WinogradTests {
  /// Graphs whose every 3x3 conv pass has Winograd: even planes with the fused 2x2 pool, odd planes (tiles
  /// that cover one row or column), padding 0, 1 and 2 (input gradients with padding 2, 1 and 0), a pool
  /// that is not 2x2 (the plane epilogue), a conv with no bias, and one feeding another (the input gradient).
  static let cases: [(String, String)] = [
    ("pool-2x2", """
      input x: f32[N, 3, 10, 8]
      input y: i32[N]
      c1 = conv2d(x, filters: 8, kernel: 3, padding: 1)
      r1 = relu(c1)
      p1 = maxpool(r1, size: 2)
      c2 = conv2d(p1, filters: 6, kernel: 3, padding: 1)
      r2 = relu(c2)
      p2 = maxpool(r2, size: 2)
      f = flatten(p2)
      o = dense(f, units: 5)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """),
    ("odd-padding-0-and-2", """
      input x: f32[N, 2, 9, 7]
      input y: i32[N]
      c1 = conv2d(x, filters: 5, kernel: 3)
      r1 = relu(c1)
      c2 = conv2d(r1, filters: 4, kernel: 3, padding: 2, bias: false)
      f = flatten(c2)
      o = dense(f, units: 3)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """),
    ("pool-3-stride-2", """
      input x: f32[N, 4, 11, 9]
      input y: i32[N]
      c1 = conv2d(x, filters: 6, kernel: 3, padding: 1)
      r1 = relu(c1)
      p1 = maxpool(r1, size: 3, stride: 2)
      c2 = conv2d(p1, filters: 3, kernel: 3, padding: 1)
      p2 = maxpool(c2, size: 2)
      f = flatten(p2)
      o = dense(f, units: 4)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """),
  ]

  /// The relative error bound of every Winograd pass here (error over the tensor's largest magnitude); im2col's
  /// is 1e-7 to 2e-6 on these graphs, Winograd's measured 2e-7 to 1.1e-6.
  static let tolerance = 4e-6
  /// Winograd's error over im2col's, at most (both floored at 1e-7, below which both are rounding noise).
  static let mostErrorRatio = 8.0

  struct Results {
    var logits: [Float], loss: Float, gradients: [String: [Float]]
  }

  static func run(_ d: Differential, _ algorithm: ConvAlgorithm, target: String = "host") throws -> (Results, Program) {
    var t = try TestTargets.resolve(target)
    t.convAlgorithm = algorithm
    let b = try CompiledBackend(name: "jit", graph: d.graph, batch: d.batch, optimizer: Optimizer(kind: .adam, learningRate: 0),
                                compiler: try JITCompiler(target: t), inferenceCalls: [d.batch])
    try b.load(d.parameters, Optimizer(kind: .adam, learningRate: 0))
    let r = try b.trainStep(images: d.images, labels: d.labels, seed: 11, step: 1, learningRate: 0)
    let program = try lower(d.graph, batch: d.batch, mode: .train(OptimizerSpec(kind: .adam)), target: t)
    return (Results(logits: r.logits, loss: r.loss, gradients: b.gradients()), program)
  }

  /// The interpreter in Double on `d`'s data: logits, loss and gradients.
  static func reference(_ d: Differential) throws -> Results {
    let r = try d.reference(Double.self) { Double($0) }
    return Results(logits: r.logits, loss: r.loss, gradients: r.gradients)
  }

  /// max |a - b| over max |reference|.
  static func relativeError(_ reference: [Float], _ b: [Float]) -> Double {
    let scale = Double(reference.map(abs).max() ?? 0)
    let worst = zip(reference, b).map { Double(abs($0 - $1)) }.max() ?? 0
    return scale == 0 ? worst : worst / scale
  }

  @Test(arguments: cases.map(\.0), TestTargets.names) func everyPassMatchesTheDoubleReference(_ name: String, _ target: String) throws {
    let d = try Differential(source: Self.cases.first { $0.0 == name }!.1, batch: 3)
    let ref = try Self.reference(d)
    let (w, program) = try Self.run(d, .winograd, target: target)
    let (i, _) = try Self.run(d, .im2col, target: target)
    let passes = program.convs.filter { $0.algorithm == .winograd }.map(\.node)
    // Both convs' forward and weight gradient, and the second conv's input gradient.
    #expect(passes.count == 5, "\(name): Winograd passes \(passes)")
    var compared = [("logits", ref.logits, w.logits, i.logits)]
    for (p, g) in ref.gradients { compared.append(("\(p) gradient", g, w.gradients[p]!, i.gradients[p]!)) }
    for (what, r, wv, iv) in compared {
      let we = Self.relativeError(r, wv), ie = Self.relativeError(r, iv)
      #expect(we <= Self.tolerance, "\(name) \(what) on \(target): Winograd error \(we)")
      #expect(max(we, 1e-7) <= Self.mostErrorRatio * max(ie, 1e-7), "\(name) \(what) on \(target): Winograd \(we) vs im2col \(ie)")
    }
  }

  /// Inference with F(4x4, 3x3) (`--conv winograd_f4`) against the interpreter in Double: the logits of graphs whose
  /// convs have no pool fused (odd planes with paddings 0 and 2; 32 channels on 28x28 planes, channels-last and
  /// NCHW), within `largeTileTolerance`, and within `largeTileErrorRatio` of im2col's.
  @Test(arguments: TestTargets.names) func largeTilesAtInferenceMatchTheDoubleReference(_ target: String) throws {
    let wide = """
      input x: f32[N, 32, 28, 28]
      input y: i32[N]
      c1 = conv2d(x, filters: 32, kernel: 3, padding: 1)
      r1 = relu(c1)
      c2 = conv2d(r1, filters: 32, kernel: 3, padding: 1)
      a = add(c2, r1)
      p = global_avgpool(a)
      f = flatten(p)
      o = dense(f, units: 5)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """
    for (name, source) in [Self.cases[1], ("wide", wide), ("wide-nchw", wide.replacingOccurrences(of: "p = global_avgpool(a)", with: "p = relu(a)"))] {
      let d = try Differential(source: source, batch: 2)
      let ref = try Self.reference(d)
      var errors: [ConvAlgorithm: Double] = [:]
      for algorithm in [ConvAlgorithm.winogradF4, .im2col] {
        var t = try TestTargets.resolve(target)
        t.convAlgorithm = algorithm
        if algorithm == .winogradF4 {
          #expect(try lower(d.graph, batch: 2, mode: .infer, target: t).convs.allSatisfy { $0.tile == 4 }, "\(name)")
        }
        let b = try CompiledBackend(inferenceOf: d.graph, compiler: try JITCompiler(target: t), inferenceCalls: [d.batch], threads: 1)
        try b.loadParameters(d.parameters)
        errors[algorithm] = Self.relativeError(ref.logits, try b.infer(images: d.images, count: d.batch))
      }
      let (we, ie) = (errors[.winogradF4]!, errors[.im2col]!)
      #expect(we <= Self.largeTileTolerance, "\(name) on \(target): F(4x4, 3x3) error \(we) (im2col \(ie))")
      #expect(max(we, 1e-7) <= Self.largeTileErrorRatio * max(ie, 1e-7), "\(name) on \(target): F(4x4, 3x3) \(we) vs im2col \(ie)")
    }
  }

  /// F(4x4, 3x3)'s bound on these graphs' logits (relative to their largest magnitude), and its most error over
  /// im2col's: measured 3e-7 to 1.6e-6, 1.1 to 4.4 times im2col's (2.3e-7 to 7.8e-7), on AVX-512 and AVX2.
  static let largeTileTolerance = 4e-6
  static let largeTileErrorRatio = 8.0

  /// The gradient check with Winograd on: the compiled gradients (fp32) against central differences of the
  /// Double interpreter's loss on the same data, within fp32's reach.
  @Test(arguments: cases.map(\.0)) func compiledGradientsPassTheGradientCheck(_ name: String) throws {
    let source = Self.cases.first { $0.0 == name }!.1
    let d = try Differential(source: source, batch: 3)
    var check = try GradCheck(source: source, batch: 3)
    for i in d.graph.inputs {
      check.inputs[i.name] = i.dtype == .f32 ? .f32(Tensor(shape: check.shapes[i.name]!.dims, data: d.images.map(Double.init)))
                                             : .i32(shape: [d.batch], data: d.labels)
    }
    check.parameters = d.parameters.tensors().mapValues { Tensor(shape: $0.shape, data: $0.data.map(Double.init)) }
    let (w, _) = try Self.run(d, .winograd)
    let compiled = Dictionary(uniqueKeysWithValues: w.gradients.map { ($0.key, Tensor(shape: check.parameters[$0.key]!.shape, data: $0.value.map(Double.init))) })
    let (error, checked) = try check.maxError(gradients: compiled)
    #expect(checked >= 12)
    #expect(error < 1e-4, "\(name): worst combined error \(error) of the Winograd gradients")
  }
}

/// A training step's weight transforms (run once per batch) are `scalarLoops`, and the LLVM back end hands
/// each of their loops a well-formed "do not vectorize" loop ID.
@Suite struct ScalarLoopsTests {
  static func scalarLoops(_ body: [Stmt]) -> Int {
    body.reduce(0) { n, s in
      switch s {
      case .scalarLoops(let b): n + 1 + scalarLoops(b)
      case .loop(_, _, let b), .when(_, let b), .region(_, let b), .kernel(_, let b), .parallel(_, _, let b): n + scalarLoops(b)
      default: n
      }
    }
  }

  @Test func kernelTransformsAreLeftScalar() throws {
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent("simplecnn.graph"))
    var t = Target.host()
    t.convAlgorithm = .winograd
    let p = try lower(g, batch: 2, mode: .train(OptimizerSpec(kind: .adam)), target: t)
    // With every 3x3 conv on Winograd: both forwards and conv2's input gradient transform the kernel, both
    // weight gradients transform the sums back (conv1 has no input gradient).
    #expect(Self.scalarLoops(p.functions.flatMap(\.body) + p.sharedKernels.flatMap(\.body)) == 5)
    // An inference call transforms the kernels every time: there the loops stay open to the vectoriser.
    let single = try lower(g, batch: 1, mode: .infer, target: t)
    #expect(Self.scalarLoops(single.functions.flatMap(\.body) + single.sharedKernels.flatMap(\.body)) == 0)
    let module = LLVMRenderer.render([p], moduleName: "scalar")
    try module.verify()
    let text = module.text
    #expect(text.contains("!{!\"llvm.loop.vectorize.enable\", i1 false}"))
    // Every loop ID is distinct and names itself first, as the loop passes require.
    let ids = text.split(separator: "\n").filter { $0.contains("= distinct !{") }
    #expect(!ids.isEmpty)
    for line in ids {
      let name = line.split(separator: " ")[0]
      #expect(line.contains("distinct !{\(name), "), "\(line)")
    }
  }
}
