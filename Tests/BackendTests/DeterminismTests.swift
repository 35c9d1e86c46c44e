import CNNCTestSupport
import Foundation
import GraphIR
import LLVMBackend
import Lowering
import Passes
import Runtime
import Testing

/// Same seed, same bytes: whatever the thread count, run after run, and across an interrupted and
/// resumed run.
@Suite(.serialized) struct DeterminismTests {
  static let data = Fixtures.root.appendingPathComponent("data/mnist").path

  static func trainer(_ graph: String, steps: Int, threads: Int, dir: String, target: String = "host",
                      precision: Precision = .fp32, shards: Int = 2) throws -> Trainer<CompiledBackend<JITCompiler>> {
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent(graph))
    let opt = Optimizer(kind: .adam, learningRate: 1e-3)
    var t = try TestTargets.resolve(target)
    t.precision = precision
    let b = try CompiledBackend(name: "jit", graph: g, batch: 64, optimizer: opt, compiler: try JITCompiler(target: t), shards: shards, threads: threads)
    var o = TrainingOptions(outputDirectory: dir)
    o.maxSteps = steps
    o.seed = 9
    return try Trainer(backend: b, graph: g, parameters: Parameters(graph: g, shapes: try inferShapes(g, batch: 64), seed: 9), optimizer: opt, options: o)
  }

  static func checkpointBytes(_ t: Trainer<CompiledBackend<JITCompiler>>) throws -> Data {
    try Data(contentsOf: URL(fileURLWithPath: t.weightsPath)) + Data(contentsOf: URL(fileURLWithPath: t.run.file(RunDirectory.optimizerFile)))
  }

  static func dir() -> String { NSTemporaryDirectory() + "cnnc-det-\(UUID().uuidString)" }

  /// On this machine's target and on the lower one the differential tests use.
  @Test(arguments: ["simplecnn.graph", "mnistnet.graph", "bncnn.graph"], TestTargets.names)
  func oneAndTwoThreadsGiveByteIdenticalCheckpoints(_ graph: String, _ target: String) throws {
    let train = try ImageDataset.load(directory: Self.data, split: "train")
    let test = ImageDataset(images: Array(train.images.prefix(784 * 100)), labels: Array(train.labels.prefix(100)), count: 100, rows: 28, cols: 28)
    var runs: [Data] = []
    for threads in [1, 2, 2] {
      var t = try Self.trainer(graph, steps: 25, threads: threads, dir: Self.dir(), target: target)
      #expect(t.backend.threads == threads)
      _ = try t.train(train: train, test: test)
      runs.append(try Self.checkpointBytes(t))
    }
    #expect(runs[0] == runs[1], "1 thread and 2 threads")
    #expect(runs[1] == runs[2], "run after run")
  }

  /// bf16 GEMMs keep the guarantee, with two shards and with one (whose step splits its kernels over the pool, each
  /// part packing its operands into scratch of its own).
  @Test(arguments: ["simplecnn.graph", "bncnn.graph"], [1, 2]) func bf16RunsAreByteIdenticalWhateverTheThreads(_ graph: String, _ shards: Int) throws {
    let train = try ImageDataset.load(directory: Self.data, split: "train")
    let test = ImageDataset(images: Array(train.images.prefix(784 * 100)), labels: Array(train.labels.prefix(100)), count: 100, rows: 28, cols: 28)
    let runs = try [1, 2, 2].map { threads in
      var t = try Self.trainer(graph, steps: 20, threads: threads, dir: Self.dir(), precision: .bf16, shards: shards)
      _ = try t.train(train: train, test: test)
      return try Self.checkpointBytes(t)
    }
    #expect(runs[0] == runs[1] && runs[1] == runs[2], "1 thread, 2 threads, run after run")
    var f32 = try Self.trainer(graph, steps: 20, threads: 2, dir: Self.dir())
    _ = try f32.train(train: train, test: test)
    #expect(try Self.checkpointBytes(f32) != runs[0], "bf16 and f32 runs differ")
  }

  /// bncnn: the running statistics and `num_batches_tracked` come back from the checkpoint too.
  @Test(arguments: ["simplecnn.graph", "bncnn.graph"]) func interruptedAndResumedRunEqualsAStraightRun(_ graph: String) throws {
    let train = try ImageDataset.load(directory: Self.data, split: "train")
    let test = ImageDataset(images: Array(train.images.prefix(784 * 100)), labels: Array(train.labels.prefix(100)), count: 100, rows: 28, cols: 28)
    var straight = try Self.trainer(graph, steps: 30, threads: 2, dir: Self.dir())
    _ = try straight.train(train: train, test: test)

    let d = Self.dir()
    var first = try Self.trainer(graph, steps: 30, threads: 2, dir: d)
    var calls = 0
    first.shouldStop = { calls += 1; return calls > 13 }  // as if SIGINT arrived before step 14
    _ = try first.train(train: train, test: test)
    #expect(first.interrupted)
    #expect(first.optimizer.step == 13)
    var second = try Self.trainer(graph, steps: 30, threads: 1, dir: d)
    try second.resume(from: d)
    _ = try second.train(train: train, test: test)
    #expect(try Self.checkpointBytes(second) == Self.checkpointBytes(straight))
  }

  /// The JIT splits kernels over one module per compile thread; the split changes no instruction of a
  /// kernel, so 1 and 3 compile threads give bit-identical steps.
  @Test func compileThreadsDoNotChangeResults() throws {
    let d = try Differential(source: try String(contentsOf: Fixtures.graphs.appendingPathComponent("simplecnn.graph"), encoding: .utf8), batch: 4)
    var runs: [(loss: Float, logits: [Float], params: [String: [Float]])] = []
    for threads in [1, 3] {
      let opt = Optimizer(kind: .adam, learningRate: 1e-3)
      let compiler = try JITCompiler(target: .host(), compileThreads: threads)
      #expect(compiler.compileThreads == threads)
      let b = try CompiledBackend(name: "jit", graph: d.graph, batch: 4, optimizer: opt, compiler: compiler, inferenceCalls: [4])
      try b.load(d.parameters, opt)
      var r = try b.trainStep(images: d.images, labels: d.labels, seed: 5, step: 1, learningRate: 1e-3)
      r = try b.trainStep(images: d.images, labels: d.labels, seed: 5, step: 2, learningRate: 1e-3)
      runs.append((r.loss, try b.infer(images: d.images, count: 4), b.parameters().values))
    }
    #expect(runs[0].loss.bitPattern == runs[1].loss.bitPattern)
    #expect(runs[0].logits == runs[1].logits)
    #expect(runs[0].params == runs[1].params)
  }
}

/// A validation split with early stopping keeps the best weights.
@Suite struct ValidationTests {
  @Test func validationSplitAndEarlyStoppingKeepTheBestCheckpoint() throws {
    let train = try ImageDataset.load(directory: DeterminismTests.data, split: "train")
    let test = try ImageDataset.load(directory: DeterminismTests.data, split: "t10k")
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent("tiny.graph"))
    let opt = Optimizer(kind: .adam, learningRate: 1e-2)
    let b = try CompiledBackend(name: "jit", graph: g, batch: 64, optimizer: opt, compiler: try JITCompiler(target: .host()), shards: 2)
    var o = TrainingOptions(outputDirectory: DeterminismTests.dir())
    o.validationFraction = 0.2
    o.patience = 1
    o.epochs = 6
    var t = try Trainer(backend: b, graph: g, parameters: Parameters(graph: g, shapes: try inferShapes(g, batch: 64), seed: 3), optimizer: opt, options: o)
    let reports = try t.train(train: train, test: test)
    #expect(reports.allSatisfy { $0.validationAccuracy != nil })
    #expect(reports.first!.validationAccuracy! > 0.8)
    // 48,000 training images: 750 steps per epoch.
    #expect(t.optimizer.step == 750 * reports.count)
    let accuracies = reports.map { $0.validationAccuracy! }
    let best = accuracies.max()!
    let bestEpoch = accuracies.firstIndex(of: best)!
    // Stopped either after the last epoch or one epoch without improvement (patience 1).
    #expect(reports.count == 6 || reports.count == bestEpoch + 2)
    let saved = try SafeTensors.read(from: t.bestPath)
    #expect(saved.metadata["cnnc.step"] == "\(750 * (bestEpoch + 1))")
    #expect(t.history.count == reports.count)
  }
}
