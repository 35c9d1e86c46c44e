import CNNCTestSupport
import Foundation
import GraphIR
import LLVMBackend
import Runtime
import SwiftBackend
import Testing

/// Both compiled back ends (LLVM JIT and generated Swift) against the reference interpreter and each
/// other: forward output, loss, every parameter gradient, inference, and the weights after several
/// Adam steps with dropout.
@Suite struct DifferentialTests {
  static let odd = """
    input x: f32[N, 2, 13, 11]
    input y: i32[N]
    c1 = conv2d(x, filters: 5, kernel: 5, stride: 2)
    r1 = relu(c1)
    p1 = avgpool(r1, size: 2, stride: 1)
    c2 = conv2d(p1, filters: 3, kernel: 1)
    r2 = relu(c2)
    p2 = maxpool(r2, size: 2)
    f = flatten(p2)
    d = dense(f, units: 7, bias: false)
    dr = dropout(d, rate: 0.4)
    s = softmax(dr)
    o = dense(s, units: 4)
    loss = cross_entropy(o, y)
    output o
    minimize loss
    """

  /// One-unit dense layers: every GEMM with a single row or column (their gradients once went unwritten).
  static let narrow = """
    input x: f32[N, 1, 6, 6]
    input y: i32[N]
    f = flatten(x)
    h = dense(f, units: 1)
    o = dense(h, units: 10)
    g = dense(o, units: 1, bias: false)
    z = dense(g, units: 3)
    loss = cross_entropy(z, y)
    output z
    minimize loss
    """

  static let cases: [String] = ["tiny.graph", "simplecnn.graph", "lenet5.graph", "mnistnet.graph", "mlp.graph", "smallcnn.graph", "residual.graph", "odd", "narrow"]

  static func source(_ name: String) throws -> String {
    switch name {
    case "odd": odd
    case "narrow": narrow
    default: try String(contentsOf: Fixtures.graphs.appendingPathComponent(name), encoding: .utf8)
    }
  }

  static func backend(_ d: Differential, fuse: Bool = true, target: String = "host") throws -> CompiledBackend<JITCompiler> {
    let b = try CompiledBackend(name: "jit", graph: d.graph, batch: d.batch, optimizer: Optimizer(kind: .adam, learningRate: 0),
                                compiler: try JITCompiler(target: try TestTargets.resolve(target)), fuse: fuse)
    try b.load(d.parameters, Optimizer(kind: .adam, learningRate: 0))
    return b
  }

  /// The Swift back end, with a private cache directory so the test really runs swiftc.
  static func swiftBackend(_ d: Differential, batches: [Int] = [], target: String = "host") throws -> CompiledBackend<SwiftCompiler> {
    let cache = NSTemporaryDirectory() + "cnnc-swift-\(UUID().uuidString)"
    let b = try CompiledBackend(name: "swift", graph: d.graph, batch: d.batch, optimizer: Optimizer(kind: .adam, learningRate: 1e-3),
                                compiler: try SwiftCompiler(source: "test", target: try TestTargets.resolve(target), cacheDirectory: cache),
                                inferenceBatches: batches)
    try b.load(d.parameters, Optimizer(kind: .adam, learningRate: 1e-3))
    return b
  }

  @Test func swiftBackendMatchesInterpreterAndJIT() throws {
    // One swiftc run covers several graphs' programs: the train step at batch 3 and inference at batch 3.
    for name in ["simplecnn.graph", "odd", "lenet5.graph"] {
      let d = try Differential(source: try Self.source(name), batch: 3)
      let ref = try d.reference(step: 1)
      let s = try Self.swiftBackend(d, batches: [3])
      #expect(s.compiler.compileSeconds > 0)
      let r = try s.trainStep(images: d.images, labels: d.labels, seed: 11, step: 1, learningRate: 0)
      expectClose([ref.loss], [r.loss], "\(name) swift loss")
      expectClose(ref.logits, r.logits, "\(name) swift logits")
      for (p, g) in ref.gradients { expectClose(g, s.gradients()[p]!, rtol: 1e-3, "\(name) swift \(p) gradient") }
      // Several Adam steps with dropout: Swift against the JIT, which is checked against the interpreter above.
      let j = try Self.backend(d)
      _ = try j.trainStep(images: d.images, labels: d.labels, seed: 11, step: 1, learningRate: 0)
      for step in 2...4 {
        let a = try s.trainStep(images: d.images, labels: d.labels, seed: 11, step: step, learningRate: 1e-3)
        let b = try j.trainStep(images: d.images, labels: d.labels, seed: 11, step: step, learningRate: 1e-3)
        expectClose([a.loss], [b.loss], rtol: 1e-3, "\(name) swift vs jit loss at step \(step)")
      }
      for n in d.parameters.names { expectClose(j.parameters().values[n]!, s.parameters().values[n]!, rtol: 1e-3, atol: 1e-5, "\(name) \(n)") }
      expectClose(try j.infer(images: d.images, count: 3), try s.infer(images: d.images, count: 3), "\(name) swift inference")
    }
  }

  /// The Swift back end on the lower target (swiftc gets a CPU name it accepts for the x86-64 levels).
  @Test func swiftBackendOnTheLowerTargetMatchesInterpreter() throws {
    let d = try Differential(source: try Self.source("simplecnn.graph"), batch: 3)
    let ref = try d.reference(step: 1)
    let b = try Self.swiftBackend(d, target: "lower")
    let r = try b.trainStep(images: d.images, labels: d.labels, seed: 11, step: 1, learningRate: 0)
    expectClose([ref.loss], [r.loss], "swift loss on \(b.compiler.target.cpu)")
    expectClose(ref.logits, r.logits, "swift logits on \(b.compiler.target.cpu)")
    for (p, g) in ref.gradients { expectClose(g, b.gradients()[p]!, rtol: 1e-3, "swift \(p) gradient on \(b.compiler.target.cpu)") }
  }

  /// On this machine's target and on a lower one it runs (other vector widths and blockings).
  @Test(arguments: cases, TestTargets.names) func lossLogitsAndGradientsMatch(_ name: String, _ target: String) throws {
    let d = try Differential(source: try Self.source(name), batch: 3)
    let ref = try d.reference(step: 1)
    for fuse in [true, false] {
      let b = try Self.backend(d, fuse: fuse, target: target)
      // lr 0: the update leaves the weights as they were, and the gradient buffer holds this step's gradients.
      let r = try b.trainStep(images: d.images, labels: d.labels, seed: 11, step: 1, learningRate: 0)
      let on = "(fuse \(fuse), \(b.compiler.target.cpu))"
      expectClose([ref.loss], [r.loss], "\(name) loss \(on)")
      expectClose(ref.logits, r.logits, "\(name) logits \(on)")
      let grads = b.gradients()
      for (p, g) in ref.gradients { expectClose(g, grads[p]!, rtol: 1e-3, "\(name) \(p) gradient \(on)") }
      #expect(b.parameters() == d.parameters)
    }
  }

  @Test(arguments: cases, TestTargets.names) func inferenceMatches(_ name: String, _ target: String) throws {
    let d = try Differential(source: try Self.source(name), batch: 3)
    var interp = try InterpreterBackend(graph: d.graph)
    interp.load(d.parameters, Optimizer(kind: .adam, learningRate: 0))
    let b = try Self.backend(d, target: target)
    expectClose(try interp.infer(images: d.images, count: 3), try b.infer(images: d.images, count: 3), "\(name) inference on \(b.compiler.target.cpu)")
  }

  @Test(arguments: ["simplecnn.graph", "odd"]) func weightsAfterAdamStepsWithDropoutMatch(_ name: String) throws {
    let d = try Differential(source: try Self.source(name), batch: 4)
    var interp = try InterpreterBackend(graph: d.graph)
    interp.load(d.parameters, Optimizer(kind: .adam, learningRate: 1e-3))
    let b = try Self.backend(d)
    for step in 1...4 {
      let a = try interp.trainStep(images: d.images, labels: d.labels, seed: 11, step: step, learningRate: 1e-3)
      let c = try b.trainStep(images: d.images, labels: d.labels, seed: 11, step: step, learningRate: 1e-3)
      expectClose([a.loss], [c.loss], rtol: 1e-3, "\(name) loss at step \(step)")
    }
    let p = interp.parameters(), q = b.parameters()
    for n in p.names { expectClose(p.values[n]!, q.values[n]!, rtol: 1e-3, atol: 1e-5, "\(name) \(n) after 4 Adam steps") }
    for (k, v) in interp.optimizerState() { expectClose(v, b.optimizerState()[k]!, rtol: 2e-3, atol: 1e-9, "\(name) \(k)") }
  }

  /// At 16 rows and more the dense forward runs as Y^T = W X^T through the register-blocked kernel;
  /// below that as dot products (covered by `inferenceMatches`).
  @Test func wideBatchInferenceMatches() throws {
    let d = try Differential(source: try Self.source("simplecnn.graph"), batch: 16)
    var interp = try InterpreterBackend(graph: d.graph)
    interp.load(d.parameters, Optimizer(kind: .adam, learningRate: 0))
    for target in TestTargets.names {
      expectClose(try interp.infer(images: d.images, count: 16), try Self.backend(d, target: target).infer(images: d.images, count: 16),
                  "batch 16 inference on the \(target) target")
    }
  }

  /// A request larger than one chunk runs in chunks dealt to the shards' arenas (here 64, 64 and 7
  /// images on 2 threads): each image gets the result it gets alone.
  @Test func chunkedInferenceMatchesOneImageAtATime() throws {
    let d = try Differential(source: try Self.source("simplecnn.graph"), batch: 2)
    let b = try CompiledBackend(name: "jit", graph: d.graph, batch: 2, optimizer: Optimizer(kind: .adam, learningRate: 0),
                                compiler: try JITCompiler(target: .host()), shards: 2, threads: 2)
    try b.load(d.parameters, Optimizer(kind: .adam, learningRate: 0))
    let px = d.images.count / 2, count = 2 * b.inferenceChunk + 7
    let images = (0..<(count * px)).map { Float(sin(Double($0) * 0.37)) }
    let all = try b.infer(images: images, count: count)
    #expect(all.count == count * 10)
    var alone: [Float] = []
    for i in 0..<count { alone += try b.infer(images: Array(images[(i * px)..<((i + 1) * px)]), count: 1) }
    expectClose(all, alone, rtol: 1e-5, atol: 1e-6, "chunked inference")
  }

  @Test func inferenceOnlyBackendInfersAndRefusesToTrain() throws {
    let d = try Differential(source: try Self.source("simplecnn.graph"), batch: 3)
    let b = try CompiledBackend(name: "jit", graph: d.graph, batch: 3, optimizer: Optimizer(kind: .adam, learningRate: 0),
                                compiler: try JITCompiler(target: .host()), inferenceOnly: true)
    try b.load(d.parameters, Optimizer(kind: .adam, learningRate: 0))
    expectClose(try Self.backend(d).infer(images: d.images, count: 3), try b.infer(images: d.images, count: 3), "inference-only")
    #expect(throws: DataError.self) { _ = try b.trainStep(images: d.images, labels: d.labels, seed: 1, step: 1, learningRate: 0) }
  }

  @Test func sgdWithMomentumMatches() throws {
    let d = try Differential(source: try Self.source("lenet5.graph"), batch: 2)
    let opt = Optimizer(kind: .sgd, learningRate: 0.05, momentum: 0.9, weightDecay: 1e-3)
    var interp = try InterpreterBackend(graph: d.graph)
    interp.load(d.parameters, opt)
    let b = try CompiledBackend(name: "jit", graph: d.graph, batch: 2, optimizer: opt, compiler: try JITCompiler(target: .host()))
    try b.load(d.parameters, opt)
    for step in 1...3 {
      _ = try interp.trainStep(images: d.images, labels: d.labels, seed: 11, step: step, learningRate: 0.05)
      _ = try b.trainStep(images: d.images, labels: d.labels, seed: 11, step: step, learningRate: 0.05)
    }
    for n in d.parameters.names { expectClose(interp.parameters().values[n]!, b.parameters().values[n]!, rtol: 1e-3, atol: 1e-6, "sgd \(n)") }
  }
}
