import CNNCTestSupport
import Foundation
import GraphIR
import LLVMBackend
import Lowering
import Passes
import Runtime
import SwiftBackend
import Testing

/// int8 convs (`input_scale`): the input quantized to u8 steps, the weights to s8 per filter, the products summed
/// in 32-bit integers by the u8 x s8 dot product or by shifts and multiplies that give its integers. Each back end
/// and target this machine runs against the reference arithmetic of `Int8Arithmetic`, bit for bit.
@Suite struct Int8Tests {
  /// Targets this machine runs: its own (VNNI's dot product where it has one), the lower test target and, on an
  /// AVX-512 host, generic AVX-512 (the emulated dot product on 16 lanes).
  static let targets = TestTargets.names + ["avx512-without-vnni"]

  static func target(_ name: String) throws -> Target? {
    guard name == "avx512-without-vnni" else { return try TestTargets.resolve(name) }
    guard Target.host().isa == .avx512 else { return nil }
    let t = try Target.resolve(cpu: "x86-64-v4", triple: nil, features: nil, runsHere: true)
    #expect(!t.int8Dot, "x86-64-v4 has no VNNI")
    return t
  }

  /// Four int8 convs: a 3x3 padded conv of 3 channels (fewer than a quad: steps packed along K, K = 27) over a
  /// signed input (zero point 100) whose steps clamp at both ends; a 1x1 conv that reads its quads of channels in
  /// place, with a residual add and relu fused in its store; a strided 3x3 without bias at zero point 128 (12
  /// channels, K = 108); a padded 3x3 of 6 channels (a quad and a half); an int8 dense layer of 125 features
  /// (the last quad with one) with a relu fused, then an int8 dense layer without bias.
  static let graph = """
    input x: f32[N, 3, 9, 7]
    input y: i32[N]
    a = conv2d(x, filters: 12, kernel: 3, padding: 1, input_scale: 0.01, input_zero_point: 100)
    r = relu(a)
    b = conv2d(r, filters: 12, kernel: 1, input_scale: 0.05, input_zero_point: 0)
    t = add(b, r)
    u = relu(t)
    c = conv2d(u, filters: 6, kernel: 3, stride: 2, bias: false, input_scale: 0.03, input_zero_point: 128)
    e = conv2d(c, filters: 5, kernel: 3, padding: 1, input_scale: 0.02, input_zero_point: 7)
    f = flatten(e)
    h = dense(f, units: 20, input_scale: 0.04, input_zero_point: 90)
    k = relu(h)
    o = dense(k, units: 7, bias: false, input_scale: 0.01, input_zero_point: 0)
    loss = cross_entropy(o, y)
    output o
    minimize loss
    """

  /// `graph` with every int8 layer's weights in the reduced range (`weight_steps: 64`).
  static let reducedGraph = graph.replacingOccurrences(of: "input_zero_point: ", with: "weight_steps: 64, input_zero_point: ")

  /// What the interpreter computes for `d` at inference.
  static func expected(_ d: Differential) throws -> [Float] {
    var interp = try InterpreterBackend(graph: d.graph)
    interp.load(d.parameters, Optimizer(kind: .adam, learningRate: 0))
    return try interp.infer(images: d.images, count: d.batch)
  }

  /// The int8 layers' input steps both clamp, so the test sees saturation at 0 and 255.
  @Test func stepsRoundHalfToEvenAndClamp() {
    let q = Quantization(scale: 0.5, zeroPoint: 10)
    #expect(Int8Arithmetic.activation(0.25, q) == 10, "0.5 steps rounds to the even 0")
    #expect(Int8Arithmetic.activation(0.75, q) == 12, "1.5 steps rounds to the even 2")
    #expect(Int8Arithmetic.activation(-100, q) == 0)
    #expect(Int8Arithmetic.activation(1000, q) == 255)
    #expect(Int8Arithmetic.activation(.nan, q) == 0, "a NaN clamps to the lowest step")
    #expect(Int8Arithmetic.weightScale([0.5, -1.27, 0.2]) == Float(1.27) / 127)
    #expect(Int8Arithmetic.weightScale([0, 0]) == 1, "a filter of zeros keeps a scale of 1")
    #expect(Int8Arithmetic.weight(-1.27, scale: Int8Arithmetic.weightScale([0.5, -1.27])) == -127)
    let c = Quantization.covering(low: -1, high: 3)
    #expect(c.scale == 4 / 255 && c.zeroPoint == 64)
    #expect(Quantization.covering(low: 0.5, high: 2).zeroPoint == 0, "0 is always representable")
    #expect(Quantization.covering(low: 0, high: 0).scale > 0)
  }

  /// Inference at batch 1 and 3, with one thread and two, gives the interpreter's bits on every target.
  @Test(arguments: targets) func convsMatchTheReferenceBitForBit(_ name: String) throws {
    guard let target = try Self.target(name) else { return }
    // Inputs in [-1.5, 1.5]: below and above the first layer's [-1, 1.55].
    try Self.eachRun(Self.graph, batches: [1, 3], target: target) { got, expected, run in
      #expect(got == expected, "int8 inference at \(run) (largest difference \(zip(got, expected).map { abs($0 - $1) }.max() ?? 0))")
    }
  }

  /// Reduced-range weights (±64): AVX2 and AVX-512 without VNNI sum pairs of products in 16 bits (`pmaddubsw`),
  /// which cannot saturate there; every target gives the reference's bits, the full range's path beside it.
  @Test(arguments: targets) func reducedRangeMatchesTheReferenceBitForBit(_ name: String) throws {
    guard let target = try Self.target(name) else { return }
    let program = try lower(try Differential(source: Self.reducedGraph, batch: 3).graph, batch: 3, mode: .infer, target: target)
    if !target.int8Dot, target.int8Pairs { #expect(program.listing.contains("pairs summed in 16 bits"), "\(program.listing.prefix(600))") }
    try Self.eachRun(Self.reducedGraph, batches: [1, 3], target: target) { got, expected, run in
      #expect(got == expected, "reduced-range int8 at \(run) (largest difference \(zip(got, expected).map { abs($0 - $1) }.max() ?? 0))")
    }
  }

  /// The reduced range's weights are steps within ±64, and its scale is the largest magnitude over 64.
  @Test func reducedRangeStepsStayWithin64() throws {
    #expect(Int8Arithmetic.weightScale([0.5, -1.28, 0.2], steps: 64) == Float(1.28) / 64)
    #expect(Int8Arithmetic.weight(-1.28, scale: Float(1.28) / 64, steps: 64) == -64)
    #expect(Quantization(scale: 1, zeroPoint: 0, weightSteps: 64).pairsFitInt16)
    #expect(!Quantization(scale: 1, zeroPoint: 0).pairsFitInt16, "255 x 127 x 2 exceeds Int16")
    let g = try Parser.parse(Array(Self.reducedGraph.utf8), defaultName: "q")
    #expect(g.int8Nodes.count == 6)
    #expect(Printer.print(g).contains("weight_steps: 64"), "the range is printed back")
  }

  /// The int8 micro-kernels' k loops keep their accumulators, B vectors, broadcasts and the dot product's
  /// temporaries in registers with the target's dot product (VNNI) and with the 16-bit pairs of reduced-range
  /// weights (AVX2, AVX-512 without VNNI). The full range's widened bytes may reload a constant or a broadcast half
  /// from the stack (`GemmBlocking.int8Temporaries` says why): their loops are only counted.
  @Test(arguments: ["x86-64-v3", "znver3", "x86-64-v4", "znver4"]) func int8MicroKernelLoopsDoNotSpill(_ cpu: String) throws {
    let t = try TargetTests.target(cpu)
    for (source, multiply) in [(Self.graph, t.int8Dot ? "vpdpbusd" : "vpmaddwd"), (Self.reducedGraph, t.int8Dot ? "vpdpbusd" : "vpmaddubsw")] {
      let program = try lower(try Differential(source: source, batch: 16).graph, batch: 16, mode: .infer, target: t)
      let module = LLVMRenderer.render([program], moduleName: "int8spills")
      try module.verify()
      let tm = try TargetMachine(t)
      try module.optimize(tm)
      let loops = TargetTests.fmaLoops(try module.assembly(tm), arm: false, multiply: multiply)
      #expect(loops.count >= program.gemms.count, "\(cpu): \(loops.count) \(multiply) loops for \(program.gemms.count) GEMMs")
      guard multiply != "vpmaddwd" else { continue }
      let spilling = loops.filter { $0.stack > 0 }
      #expect(spilling.isEmpty, "\(cpu), \(multiply): int8 micro-kernel loops touching the stack: \(spilling.map { "\($0.label) (\($0.fmas) \(multiply), \($0.stack) stack accesses)" })")
    }
  }

  /// Inference of `graph` at each of `batches`, with one thread and two, on `target`: `check(got, expected, run)`
  /// against the interpreter's outputs each time.
  static func eachRun(_ graph: String, batches: [Int], target: Target, _ check: ([Float], [Float], String) -> Void) throws {
    for batch in batches {
      let d = try Differential(source: graph, batch: batch)
      let expected = try Self.expected(d)
      for threads in [1, 2] {
        let b = try CompiledBackend(inferenceOf: d.graph, compiler: try JITCompiler(target: target), inferenceCalls: [batch], threads: threads)
        try b.loadParameters(d.parameters)
        check(try b.infer(images: d.images, count: batch), expected, "batch \(batch), \(threads) threads, on \(target.cpu)")
      }
    }
  }

  /// A ResNet-style stem (7x7, stride 2, 3 channels) whose columns exceed the band budget: it runs in bands of output
  /// rows, split over the pool at batch 1, its quads along the kernel rows, and gives the reference's bits.
  @Test(arguments: targets) func aStemInBandsMatchesTheReference(_ name: String) throws {
    guard let target = try Self.target(name) else { return }
    let graph = """
      input x: f32[N, 3, 128, 128]
      input y: i32[N]
      s = conv2d(x, filters: 8, kernel: 7, stride: 2, padding: 3, input_scale: 0.012, input_zero_point: 128)
      r = relu(s)
      f = flatten(r)
      loss = cross_entropy(f, y)
      output f
      minimize loss
      """
    let program = try lower(try Differential(source: graph, batch: 1).graph, batch: 1, mode: .infer, target: target)
    // Bands of rows (the whole plane would be 8x4096), each kernel row's 7 weights in 2 quads: 42.
    #expect(program.listing.contains("gemm s 8x") && program.listing.contains("x42:") && !program.listing.contains("gemm s 8x4096x"), "\(program.listing.prefix(600))")
    try Self.eachRun(graph, batches: [1, 2], target: target) { got, expected, run in #expect(got == expected, "stem at \(run)") }
  }

  /// First layers of one and two channels, their quads along the kernel rows: a 5x5 of stride 2 without padding on
  /// an odd width (the plane padded to the image's width, wider than the windows read), a 2x2 of stride 2 and a 1x1
  /// (one tap of each row's quad), bit for bit on every target.
  @Test(arguments: targets) func fewChannelKernelsMatchTheReference(_ name: String) throws {
    guard let target = try Self.target(name) else { return }
    let graph = """
      input x: f32[N, 1, 13, 11]
      input y: i32[N]
      a = conv2d(x, filters: 6, kernel: 5, stride: 2, input_scale: 0.01, input_zero_point: 120)
      b = conv2d(x, filters: 2, kernel: 2, stride: 2, weight_steps: 64, input_scale: 0.02, input_zero_point: 3)
      c = conv2d(b, filters: 5, kernel: 1, input_scale: 0.01, input_zero_point: 128)
      d = conv2d(x, filters: 3, kernel: 3, stride: 3, padding: 1, input_scale: 0.01, input_zero_point: 60)
      e = conv2d(x, filters: 4, kernel: 5, stride: 4, padding: 2, input_scale: 0.01, input_zero_point: 9)
      h = conv2d(x, filters: 3, kernel: 3, padding: 1, input_scale: 0.02, input_zero_point: 200)
      fa = flatten(a)
      fc = flatten(c)
      fd = flatten(d)
      fe = flatten(e)
      fh = flatten(h)
      o = concat(fa, fc, fd, fe, fh)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """
    try Self.eachRun(graph, batches: [1, 2], target: target) { got, expected, run in #expect(got == expected, "first layers at \(run)") }
  }

  /// A 3x3 int8 conv whose column matrix would not stay in L2 (36 quads x 2,304 columns), made and multiplied in
  /// bands of output rows: split over the pool at batch 1, image by image at batch 2; a strided conv after it reads
  /// its output.
  @Test(arguments: targets) func bandedConvsMatchTheReference(_ name: String) throws {
    guard let target = try Self.target(name) else { return }
    let graph = """
      input x: f32[N, 16, 48, 48]
      input y: i32[N]
      a = conv2d(x, filters: 8, kernel: 3, padding: 1, input_scale: 0.01, input_zero_point: 120)
      b = conv2d(a, filters: 4, kernel: 3, stride: 2, input_scale: 0.02, input_zero_point: 100)
      f = flatten(b)
      loss = cross_entropy(f, y)
      output f
      minimize loss
      """
    let program = try lower(try Differential(source: graph, batch: 1).graph, batch: 1, mode: .infer, target: target)
    let plane = 48 * 48
    #expect(program.gemms.contains { $0.node == "a" && $0.n < plane && plane % $0.n == 0 }, "\(program.gemms.filter { $0.node == "a" })")
    try Self.eachRun(graph, batches: [1, 2], target: target) { got, expected, run in #expect(got == expected, "banded conv at \(run)") }
  }

  /// ResNet's stem pool then an int8 conv, at batch 1 and 3 (neither divided by two parts): the padded pool splits
  /// each plane's rows over the pool (runs of 1, 36 and 1 rows: the leftovers dealt in turn), the conv packs each
  /// part's pixels of every quad and runs in two bands of rows.
  @Test(arguments: targets) func rowSplitsMatchTheReference(_ name: String) throws {
    guard let target = try Self.target(name) else { return }
    let graph = """
      input x: f32[N, 32, 75, 75]
      input y: i32[N]
      p = maxpool(x, size: 3, stride: 2, padding: 1)
      a = conv2d(p, filters: 16, kernel: 3, padding: 1, input_scale: 0.01, input_zero_point: 120)
      f = flatten(a)
      loss = cross_entropy(f, y)
      output f
      minimize loss
      """
    let program = try lower(try Differential(source: graph, batch: 3).graph, batch: 3, mode: .infer, target: target)
    if target.parallelParts > 1 {
      #expect(program.splits.contains { $0.node == "p" && $0.by == "rows" }, "\(program.splits)")
      #expect(program.splits.contains { $0.node == "a" && $0.by == "pixels" }, "\(program.splits)")
    }
    try Self.eachRun(graph, batches: [1, 3], target: target) { got, expected, run in #expect(got == expected, "row splits at \(run)") }
  }

  /// A MobileNetV2 block: int8 1x1 convs around a depthwise conv run channels-last (the expansion from an NCHW
  /// input, the projection from a channels-last one with the residual add in its store), as the f32 block does.
  /// The depthwise conv's f32 sums are ordered otherwise than the reference's, which can move a projection input
  /// across a step: the outputs agree to a few steps of the projection's scale.
  @Test(arguments: targets) func channelsLastBlocksMatchTheReference(_ name: String) throws {
    guard let target = try Self.target(name) else { return }
    let graph = """
      input x: f32[N, 8, 10, 10]
      input y: i32[N]
      e = conv2d(x, filters: 24, kernel: 1, input_scale: 0.01, input_zero_point: 128)
      r = clip(e, min: 0.0, max: 6.0)
      d = conv2d(r, filters: 24, kernel: 3, padding: 1, groups: 24)
      s = clip(d, min: 0.0, max: 6.0)
      p = conv2d(s, filters: 24, kernel: 1, input_scale: 0.02, input_zero_point: 0)
      t = add(p, e)
      o = conv2d(t, filters: 4, kernel: 1, input_scale: 0.05, input_zero_point: 100)
      g = global_avgpool(o)
      f = flatten(g)
      loss = cross_entropy(f, y)
      output f
      minimize loss
      """
    let program = try lower(try Differential(source: graph, batch: 2).graph, batch: 2, mode: .infer, target: target)
    #expect(program.listing.contains("int8 channels-last"), "\(program.listing.prefix(800))")
    try Self.eachRun(graph, batches: [1, 2], target: target) { got, expected, run in Self.expectClose(got, expected, within: 0.02, run) }
  }

  /// Channels-last int8 1x1 convs large enough for the pool: split by pixels (225 of them: 112 and 113, the remainder to
  /// the last part), and by filters where the weights would take half of L2 (288 quads x 512 filters); the depthwise
  /// conv between them (152 channels: 9 vectors of 16 and a masked rest) by rows at batch 1, by images at batch 2. Its
  /// sums may move a step (see above), which the pooled means shrink 225 times: a pixel lost moves them more.
  @Test(arguments: targets) func channelsLastSplitsMatchTheReference(_ name: String) throws {
    guard let target = try Self.target(name) else { return }
    let graph = """
      input x: f32[N, 32, 15, 15]
      input y: i32[N]
      e = conv2d(x, filters: 152, kernel: 1, input_scale: 0.01, input_zero_point: 128)
      r = clip(e, min: 0.0, max: 6.0)
      d = conv2d(r, filters: 152, kernel: 3, padding: 1, groups: 152)
      s = clip(d, min: 0.0, max: 6.0)
      p = conv2d(s, filters: 1152, kernel: 1, input_scale: 0.02, input_zero_point: 0)
      t = clip(p, min: 0.0, max: 6.0)
      w = conv2d(t, filters: 512, kernel: 1, input_scale: 0.05, input_zero_point: 0)
      g = global_avgpool(w)
      f = flatten(g)
      loss = cross_entropy(f, y)
      output f
      minimize loss
      """
    let program = try lower(try Differential(source: graph, batch: 1).graph, batch: 1, mode: .infer, target: target)
    if target.parallelParts > 1 {
      #expect(program.splits.contains { $0.node == "p" && $0.by == "pixels" }, "\(program.splits)")
      #expect(program.splits.contains { $0.node == "w" && $0.by == "filters" }, "\(program.splits)")
      #expect(program.splits.contains { $0.node == "d" && $0.by == "rows" }, "\(program.splits)")
      let two = try lower(try Differential(source: graph, batch: 2).graph, batch: 2, mode: .infer, target: target)
      #expect(two.splits.contains { $0.node == "d" && $0.by == "images" }, "\(two.splits)")
    }
    try Self.eachRun(graph, batches: [1, 2], target: target) { got, expected, run in Self.expectClose(got, expected, within: 0.001, run) }
  }

  /// Expects `got` within `fraction` of `expected`'s largest magnitude, element by element.
  static func expectClose(_ got: [Float], _ expected: [Float], within fraction: Float, _ run: String) {
    let worst = zip(got, expected).map { abs($0 - $1) }.max() ?? .infinity, largest = expected.map(abs).max() ?? 0
    #expect(got.count == expected.count && worst <= fraction * largest, "\(run): \(worst) of \(largest)")
  }

  /// The Swift back end renders the same integers.
  @Test func swiftBackendMatchesTheReference() throws {
    let d = try Differential(source: Self.graph, batch: 2)
    let cache = NSTemporaryDirectory() + "cnnc-swift-\(UUID().uuidString)"
    let s = try CompiledBackend(inferenceOf: d.graph, compiler: try SwiftCompiler(source: "int8", target: .host(), cacheDirectory: cache), inferenceCalls: [2])
    try s.loadParameters(d.parameters)
    #expect(try s.infer(images: d.images, count: 2) == (try Self.expected(d)))
  }

  /// A quantized graph is for inference: training it is refused at the conv, with what to do instead.
  @Test func trainingIsRefused() throws {
    let graph = try Parser.parse(Array(Self.graph.utf8), defaultName: "q")
    #expect(throws: DiagnosticList.self) { try Pipeline(batch: 2, purpose: .training).run(graph, to: .grad) }
    do {
      _ = try Pipeline(batch: 2, purpose: .training).run(graph, to: .grad)
    } catch {
      #expect(error.diagnostics.count == 6 && error.diagnostics[0].message.contains("cnnc quantize"))
    }
  }
}
