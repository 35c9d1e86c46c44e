import FileSystem
import ArgumentParser
import COpenBLAS
import Foundation
import GraphIR
import LLVMBackend
import Lowering
import Passes
import Runtime
import SwiftBackend

/// `cnnc bench`: the benchmark protocol of the peers' table, printed as one JSON object.
struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Benchmark training and inference with a compiled back end; prints one JSON object.",
    discussion: """
      Protocol: MNIST normalised per batch, batch 64, Adam lr 1e-3, a fresh permutation per epoch with \
      drop_last. Training images/s is timed over whole epochs after the first (--epochs N, N >= 2) or \
      over steps 2...N+1 (--steps N). Inference: batch 1000 over the test set (median of 3 passes) and \
      batch 1 over single images (median latency of 5 chunks). Also: compile time, first-step time, peak \
      RSS, test accuracy, threads, the OpenBLAS kernel, and GFLOP/s against a sgemm peak measured now.
      """)

  /// The training batch of the protocol.
  static let batch = 64
  /// The most epochs, steps and batch-1 images a benchmark may ask for.
  static let maxEpochs = 100, maxSteps = 1_000_000, maxSingles = 10_000_000

  /// The batch of the inference throughput figure (the peers' scripts time the same).
  static let inferenceBatch = 1000

  @Argument(help: "The .graph file (default: the built-in SimpleCNN).") var file: String?
  @OptionGroup var modelOptions: ModelFileOptions
  @Option(parsing: .unconditional, help: "Back end: jit or swift.") var backend: BackendKind = .jit
  @OptionGroup(title: "Target") var targetOptions: TargetOptions
  @Option(parsing: .unconditional, help: "Time whole epochs after the first (at least 2).") var epochs: Int?
  @Option(parsing: .unconditional, help: "Time this many training steps after the first.") var steps: Int = 300
  @Option(parsing: .unconditional, help: "Images for the batch-1 latency figure.") var singles: Int = 2000
  @Option(parsing: .unconditional, help: "Data directory: IDX, CIFAR-10 or CIFAR-100 binary files (see cnnc train --help).") var data: String?
  @Option(parsing: .unconditional, help: "Random seed.") var seed: UInt64 = 1
  @Option(parsing: .unconditional, help: "Shards per batch (see cnnc train --help).") var shards: Int = 2
  @Option(parsing: .unconditional, help: "Threads for the shards (default: all CPUs).") var threads: Int?
  @Flag(help: "Add per-kernel time tables (training step, batch-1 inference, one inference chunk), keyed by .graph line.") var profile = false
  @Flag(name: .customLong("compile-scaling"), help: "Instead: time checking (1k-100k statements) and JIT (chains of 10-300 convolutions) against graph size.")
  var compileScaling = false
  @Flag(help: "Instead: GFLOP/s of every register-blocked GEMM of one shard's training step, alone on one core, against the core's FMA peak.")
  var kernels = false
  @Option(name: .customLong("scaling-layers"), parsing: .upToNextOption, help: "Convolution chain lengths for --compile-scaling (default 10 30 100 300).")
  var scalingLayers: [Int] = CompileScaling.layerCounts
  @Flag(name: .customLong("inference-only"), help: "Instead: inference alone on random inputs of the model's input shape (no data set), per batch of --batches.")
  var inferenceOnly = false
  @Option(parsing: .unconditional, help: "Batch sizes for --inference-only, comma-separated (default 1,16).") var batches: String = "1,16"
  @Option(parsing: .unconditional, help: "Seconds of timed calls per batch size for --inference-only (default 2).") var seconds: Double = 2
  @Option(parsing: .unconditional, help: "Weights for --inference-only (safetensors); an .onnx model's own by default, seeded random ones for a .graph.")
  var weights: String?

  /// The batch sizes of `--batches`.
  var batchSizes: [Int] { batches.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
  /// The most seconds `--seconds` may ask for per batch size.
  static let maxSeconds = 600.0

  func validate() throws {
    try BackendKind.check(backend, allowed: [.jit, .swift])
    let sizes = batchSizes
    guard !sizes.isEmpty, sizes.count == batches.split(separator: ",").count, sizes.allSatisfy({ (1...Infer.maxBatch).contains($0) }) else {
      throw ValidationError("--batches takes batch sizes from 1 to \(Infer.maxBatch), comma-separated, got '\(batches)'")
    }
    guard seconds.isFinite, seconds > 0, seconds <= Self.maxSeconds else { throw ValidationError("--seconds must be above 0 and at most \(Int(Self.maxSeconds)), got \(seconds)") }
    if let epochs, epochs < 2 { throw ValidationError("--epochs must be at least 2 (the first epoch is not timed)") }
    guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
    guard singles >= 5 else { throw ValidationError("--singles must be at least 5") }
    guard scalingLayers.allSatisfy({ (1...5000).contains($0) }) else { throw ValidationError("--scaling-layers takes chain lengths from 1 to 5000") }
    // Bounds that keep a mistyped count from running for days; the figures settle long before them.
    if let epochs, epochs > Self.maxEpochs { throw ValidationError("--epochs must be at most \(Self.maxEpochs), got \(epochs)") }
    guard steps <= Self.maxSteps else { throw ValidationError("--steps must be at most \(Self.maxSteps), got \(steps)") }
    guard singles <= Self.maxSingles else { throw ValidationError("--singles must be at most \(Self.maxSingles), got \(singles)") }
    guard shards >= 1, Self.batch % shards == 0 else { throw ValidationError("--shards must divide the batch of \(Self.batch) into equal parts, got \(shards)") }
    try validateThreads(threads)
  }

  func run() throws {
    if compileScaling {
      try reportingErrors { print(try CompileScaling.run(layers: scalingLayers, target: try targetOptions.resolve(runsHere: true))) }
      return
    }
    let f = try file.map { try GraphFile(path: $0, verbose: modelOptions.verbose) } ?? GraphFile(builtin: "simplecnn.graph", text: defaultGraph)
    if inferenceOnly {
      try reportingErrors {
        _ = try loadBLAS()
        let bench = InferenceBench(file: f, weights: weights, batches: batchSizes, backend: backend, target: try targetOptions.resolve(runsHere: true),
                                   threads: threads, seconds: seconds, seed: seed, profile: profile)
        print(try bench.run())
      }
      return
    }
    if kernels {
      try reportingErrors { print(try KernelBench.run(f, batch: 64, shards: shards, target: try targetOptions.resolve(runsHere: true))) }
      return
    }
    try reportingErrors {
      let core = try loadBLAS()
      let target = try targetOptions.resolve(runsHere: true)
      let trainSet = try ImageDataset.loadSet(directory: data ?? defaultDataDirectory(), training: true)
      let testSet = try ImageDataset.loadSet(directory: data ?? defaultDataDirectory(), training: false)
      if backend == .jit {
        // The warm figure's cache is a directory of its own, so the cold figure is cold whatever ran before.
        // A new private directory (mkdtemp, mode 0700): a name another user could have made first is never adopted.
        let cacheDirectory = URL(fileURLWithPath: try makeTemporaryDirectory(prefix: "cnnc-bench-objects"))
        defer { try? FileManager.default.removeItem(at: cacheDirectory) }
        let jit = { (cache: ObjectCache?) in { (batch: Int, opt: Optimizer, calls: [Int]) in
          try CompiledBackend(name: "jit", graph: f.graph, batch: batch, optimizer: opt, compiler: try JITCompiler(target: target, cache: cache),
                              inferenceCalls: calls, shards: shards, threads: threads, profile: profile)
        } }
        try measure(f, jit(nil), trainSet, testSet, core, target, cached: jit(ObjectCache(directory: cacheDirectory)))
      } else {
        try measure(f, { try CompiledBackend(name: "swift", graph: f.graph, batch: $0, optimizer: $1, compiler: try SwiftCompiler(source: f.path, target: target), inferenceCalls: $2, shards: shards, threads: threads, profile: profile) },
                    trainSet, testSet, core, target)
      }
    }
  }

  /// Runs the protocol with back ends from `make`; with `cached` (back ends whose compiler keeps object code
  /// in a cache of the bench's own), also times a compile that finds every module in that cache.
  func measure<C>(_ f: GraphFile, _ make: (Int, Optimizer, [Int]) throws -> CompiledBackend<C>, _ trainSet: ImageDataset, _ testSet: ImageDataset, _ core: String, _ target: Target,
                  cached: ((Int, Optimizer, [Int]) throws -> CompiledBackend<C>)? = nil) throws {
    let batch = Self.batch
    let shapes = try f.run { () throws(DiagnosticList) in try inferShapes(f.graph, batch: batch) }
    let flopsForward = summarize(f.graph, shapes).reduce(0) { $0 + $1.flopsPerImage }
    let opt = Optimizer(kind: .adam, learningRate: 1e-3)
    var options = TrainingOptions(outputDirectory: "")  // the benchmark writes no checkpoints
    options.seed = seed
    options.evalBatch = Self.inferenceBatch
    let start = Date()
    // Every program the bench runs (the batch-1 one included) is lowered before the first step; the
    // training step is compiled before it (compile_s), the inference programs meanwhile (compile_background_s).
    let calls = options.evaluationCalls(testSet.count) + [1]
    let b = try make(batch, opt, calls)
    let compileSeconds = Date().timeIntervalSince(start)
    var trainer = try Trainer(backend: b, graph: f.graph, parameters: Parameters(graph: f.graph, shapes: shapes, seed: seed), optimizer: opt, options: options)
    try check(trainSet, testSet, classes: trainer.classes, imageDims: shapes[f.graph.inputs.first { $0.dtype == .f32 }!.name]!.dims)

    let px = trainSet.imageBytes
    let (firstStep, trainRate) = try timeTraining(&trainer, trainSet, batch: batch)
    let (inferRate, accuracy) = try timeInference(&trainer, testSet)
    let latency = try singleImageLatency(trainer.backend, testSet)

    // Peak memory of the workload itself (training and inference), read before the sgemm calibration below.
    let peakMemory = peakResidentMegabytes()
    // The same compile again from a cache the first of two back ends filled (it waits for its evaluation
    // programs when it goes).
    let cachedSeconds = try cached.map { make in
      _ = try make(batch, opt, calls)
      let start = Date()
      _ = try make(batch, opt, calls)
      return Date().timeIntervalSince(start)
    }
    // The machine's peak uses every thread, whatever BLAS is set to for the shards.
    let blasThreads = openblas_get_num_threads()
    openblas_set_num_threads(Int32(ProcessInfo.processInfo.activeProcessorCount))
    let peak = measureSgemmPeak()
    openblas_set_num_threads(blasThreads)
    let trainFlops = Double(3 * flopsForward)
    let json: [(String, String)] = [
      ("framework", "\"cnnc \(backend.rawValue)\(target.precision == .fp32 ? "" : " " + target.precision.rawValue)\""), ("graph", "\"\(f.graph.name)\""), ("backend", "\"\(backend.rawValue)\""), ("batch", "\(batch)"),
      ("train_images_per_s", fmt(trainRate)), ("train_timed", epochs != nil ? "\"epochs 2..\(epochs!)\"" : "\"steps 2..\(steps + 1)\""),
      ("train_gflops", fmt(trainRate * trainFlops / 1e9)), ("train_fraction_of_sgemm_peak", fmt(trainRate * trainFlops / 1e9 / peak, 3)),
      ("compile_s", fmt(compileSeconds, 3)), ("compile_background_s", b.backgroundCompileSeconds.map { fmt($0, 3) } ?? "null"),
      ("compile_cached_s", cachedSeconds.map { fmt($0, 3) } ?? "null"),
      ("first_step_s", fmt(firstStep, 4)),
      ("infer_b1000_images_per_s", fmt(inferRate)), ("infer_b1000_fraction_of_sgemm_peak", fmt(inferRate * Double(flopsForward) / 1e9 / peak, 3)),
      ("infer_b1_us_per_image", fmt(latency * 1e6, 1)),
      ("peak_rss_mb", fmt(peakMemory, 1)), ("test_accuracy", fmt(accuracy, 4)),
      ("threads", "\(trainer.backend.threads)"), ("shards", "\(shards)"), ("blas_threads", "\(openblas_get_num_threads())"), ("openblas_kernel", "\"\(core)\""),
      ("sgemm_peak_gflops", fmt(peak, 1)), ("train_mflop_per_image", fmt(trainFlops / 1e6, 2)),
      ("target", "{\"cpu\": \"\(target.cpu)\", \"host_cpu\": \"\(Target.host().cpu)\", \"isa\": \"\(target.isa.rawValue)\", \"lanes\": \(target.lanes), \"registers\": \(target.vectorRegisters), \"origin\": \"\(target.origin.rawValue)\", \"precision\": \"\(target.precision.rawValue)\", \"bf16_dot\": \(target.bf16Dot)}"),
    ]
    var fields = json.map { "  \"\($0.0)\": \($0.1)" }
    if profile { fields += try profileFields(trainer.backend, testSet, px: px) }
    print("{\n" + fields.joined(separator: ",\n") + "\n}")
  }

  /// Refuses data the protocol cannot time: too few training images for an untimed first step and a timed one,
  /// labels past the graph's classes, images of another size.
  func check(_ trainSet: ImageDataset, _ testSet: ImageDataset, classes: Int, imageDims: [Int]) throws {
    guard trainSet.count >= 2 * Self.batch else {
      throw DataError("the benchmark needs at least \(2 * Self.batch) training images (an untimed first step and a timed one of batch \(Self.batch)); \(trainSet.path) has \(trainSet.count)")
    }
    guard testSet.count >= 1 else { throw DataError("the benchmark needs test images; \(testSet.path) has none") }
    for set in [trainSet, testSet] {
      try set.validateLabels(classes: classes)
      try set.validateImages(forInput: imageDims)
    }
  }

  /// The first training step alone, then images/s over timed steps or whole epochs after the first.
  func timeTraining<C>(_ trainer: inout Trainer<CompiledBackend<C>>, _ trainSet: ImageDataset, batch: Int) throws -> (firstStep: Double, imagesPerSecond: Double) {
    let px = trainSet.imageBytes
    var images = [Float](repeating: 0, count: batch * px)
    var labels = [Int32](repeating: 0, count: batch)
    var step = 0
    func runEpochSteps(_ epoch: Int, _ range: Range<Int>) throws {
      var rng = SeededRandom(seed: seed, stream: 0x5eed_0000 &+ UInt64(epoch))
      let order = rng.permutation(trainSet.count)
      for s in range {
        let idx = order[(s * batch)..<((s + 1) * batch)]
        try trainSet.normalizedBatch(idx, into: &images)
        for (j, i) in idx.enumerated() { labels[j] = Int32(trainSet.labels[i]) }
        step += 1
        _ = try trainer.backend.trainStep(images: images, labels: labels, seed: seed, step: step, learningRate: 1e-3)
      }
    }
    let stepsPerEpoch = trainSet.count / batch
    let t0 = Date()
    try runEpochSteps(0, 0..<1)
    let firstStep = Date().timeIntervalSince(t0)
    var timedImages = 0, timedSeconds = 0.0
    if let epochs {
      try runEpochSteps(0, 1..<stepsPerEpoch)
      for e in 1..<epochs {
        let t = Date()
        try runEpochSteps(e, 0..<stepsPerEpoch)
        timedSeconds += Date().timeIntervalSince(t)
        timedImages += stepsPerEpoch * batch
      }
    } else {
      let n = min(steps, stepsPerEpoch - 1)
      let t = Date()
      try runEpochSteps(0, 1..<(1 + n))
      timedSeconds = Date().timeIntervalSince(t)
      timedImages = n * batch
    }
    trainer.optimizer.step = step
    return (firstStep, Double(timedImages) / timedSeconds)
  }

  /// Inference at `inferenceBatch` over the test set: images/s of the median of 3 passes, and the accuracy.
  func timeInference<C>(_ trainer: inout Trainer<CompiledBackend<C>>, _ testSet: ImageDataset) throws -> (imagesPerSecond: Double, accuracy: Double) {
    _ = try trainer.evaluate(testSet)  // warm-up (first touches of the arenas and code pages)
    var passes: [Double] = []
    var accuracy = 0.0
    for _ in 0..<3 {
      let t = Date()
      accuracy = try trainer.evaluate(testSet).accuracy
      passes.append(Date().timeIntervalSince(t))
    }
    return (Double(testSet.count) / passes.sorted()[1], accuracy)
  }

  /// Batch 1: the median over 5 chunks of single-image calls of the seconds per image.
  func singleImageLatency<C>(_ backend: CompiledBackend<C>, _ testSet: ImageDataset) throws -> Double {
    var one = [Float](repeating: 0, count: testSet.imageBytes)
    _ = try backend.infer(images: one, count: 1)
    var chunks: [Double] = []
    let per = singles / 5
    for c in 0..<5 {
      let t = Date()
      for i in 0..<per {
        try testSet.normalizedBatch([(c * per + i) % testSet.count][...], into: &one)
        _ = try backend.infer(images: one, count: 1)
      }
      chunks.append(Date().timeIntervalSince(t) / Double(per))
    }
    return chunks.sorted()[2]
  }

  /// The per-kernel tables: one shard's training step (the shards run side by side), then inference of one
  /// image (the batch-1 latency) and of one chunk of the batch-1000 pass; slowest kernels first.
  func profileFields<C>(_ backend: CompiledBackend<C>, _ testSet: ImageDataset, px: Int) throws -> [String] {
    let convs = backend.convAlgorithms
    /// The conv algorithm of a row's statement, as a JSON field.
    func algorithm(_ name: String) -> String { convs[name].map { ", \"algorithm\": \"\($0.label)\"" } ?? "" }
    let rows = backend.profileReport().sorted { $0.msPerStep > $1.msPerStep }.map {
      String(format: "    {\"line\": %d, \"statement\": \"%@\", \"op\": \"%@\"%@, \"ms_per_step\": %.3f, \"share\": %.3f}",
             $0.line, $0.name, $0.op, algorithm($0.name), $0.msPerStep, $0.share)
    }
    var fields = ["  \"profile\": [\n" + rows.joined(separator: ",\n") + "\n  ]"]
    for (count, repeats) in [(1, 2000), (backend.inferencePlan(Self.inferenceBatch)[0].batch, 50)] {
      var batch = [Float](repeating: 0, count: count * px)
      try testSet.normalizedBatch(Array(0..<count)[...], into: &batch)
      fields.append(try backend.inferenceProfileField(images: batch, count: count, repeats: repeats))
    }
    return fields
  }

  func fmt(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }

  /// Best-of-5 GFLOP/s of a 1024^3 sgemm with the threads OpenBLAS uses: the machine's peak, now.
  func measureSgemmPeak() -> Double {
    let n = 1024
    let a = [Float](repeating: 1, count: n * n), b = [Float](repeating: 0.5, count: n * n)
    var c = [Float](repeating: 0, count: n * n)
    var best = 0.0
    for _ in 0..<5 {
      let t = Date()
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a, Int32(n), b, Int32(n), 0, &c, Int32(n))
      best = max(best, 2 * Double(n * n * n) / Date().timeIntervalSince(t) / 1e9)
    }
    return best
  }
}

/// A back end whose inference calls can be profiled kernel by kernel (both compiled back ends).
protocol InferenceProfiling {
  /// The JSON field `profile_infer_bCOUNT`: each kernel's time in one call on `count` of `images` (`repeats`
  /// calls of the program at that batch), slowest first, with each conv's algorithm and each value's layout.
  func inferenceProfileField(images: [Float], count: Int, repeats: Int) throws -> String
}

extension CompiledBackend: InferenceProfiling {
  func inferenceProfileField(images: [Float], count: Int, repeats: Int) throws -> String {
    let convs = convAlgorithms, last = channelsLastValues
    /// The conv algorithm and the layout of a row's statement, as JSON fields.
    func choices(_ name: String) -> String {
      (convs[name].map { ", \"algorithm\": \"\($0.label)\"" } ?? "") + ", \"layout\": \"\(last.contains(name) ? "channels_last" : "nchw")\""
    }
    let rows = try profileInference(images: images, count: count, repeats: repeats).sorted { $0.msPerCall > $1.msPerCall }.map {
      String(format: "    {\"line\": %d, \"statement\": \"%@\", \"op\": \"%@\"%@, \"us_per_call\": %.1f, \"share\": %.3f}",
             $0.line, $0.name, $0.op, choices($0.name), $0.msPerCall * 1000, $0.share)
    }
    return "  \"profile_infer_b\(count)\": [\n" + rows.joined(separator: ",\n") + "\n  ]"
  }
}
