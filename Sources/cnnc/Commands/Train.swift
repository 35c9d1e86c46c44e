import FileSystem
import ArgumentParser
import Foundation
import GraphIR
import LLVMBackend
import Lowering
import SwiftBackend
import Passes
import Runtime

/// Where the bundled MNIST copy lives: `data/mnist` in the working tree or beside the built binary's package.
func defaultDataDirectory() -> String {
  var candidates = ["data/mnist"]
  // The running binary's own path (not argv[0], which may be a bare name found on PATH).
  let selfPath = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
  let exe = URL(fileURLWithPath: selfPath).resolvingSymlinksInPath()
  // .build/<config>/cnnc -> package root
  var dir = exe.deletingLastPathComponent()
  for _ in 0..<4 {
    candidates.append(dir.appendingPathComponent("data/mnist").path)
    candidates.append(dir.appendingPathComponent("share/cnnc/mnist").path)
    dir = dir.deletingLastPathComponent()
  }
  return candidates.first { FileManager.default.fileExists(atPath: $0) } ?? "data/mnist"
}

/// `cnnc train`: trains a graph on an IDX dataset (MNIST by default).
struct Train: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Train a graph on MNIST (or any IDX dataset given with --data).")

  @Argument(help: "The .graph file (or .onnx model, which starts from its own weights) to train (default: the built-in SimpleCNN, Graphs/simplecnn.graph).")
  var file: String?
  @OptionGroup var modelOptions: ModelFileOptions

  @Option(parsing: .unconditional, help: "Back end: swift (generated Swift, compiled with swiftc), jit (LLVM ORC JIT), interp (the reference interpreter).")
  var backend: BackendKind = .swift
  @Flag(help: "Use the LLVM JIT back end (same as --backend jit).") var jit = false
  @OptionGroup(title: "Target") var targetOptions: TargetOptions
  @OptionGroup var cacheOptions: CacheOptions
  @Option(parsing: .unconditional, help: "Number of epochs.") var epochs: Int = 1
  @Option(name: .customLong("batch"), parsing: .unconditional, help: "Batch size.") var batch: Int = 64
  @Option(parsing: .unconditional, help: "Learning rate.") var lr: Float = 1e-3
  @Option(parsing: .unconditional, help: "Optimiser: adam or sgd.") var optimizer: String = "adam"
  @Option(parsing: .unconditional, help: "SGD momentum (0 <= momentum < 1).") var momentum: Float = 0
  @Option(name: .customLong("weight-decay"), parsing: .unconditional, help: "L2 weight decay (>= 0).") var weightDecay: Float = 0
  @Option(parsing: .unconditional, help: "Random seed (initialisation, data order, dropout).") var seed: UInt64 = 1
  @Option(parsing: .unconditional, help: "Fraction of the training set held out for validation, e.g. 0.2.") var val: Double = 0
  @Option(name: .customLong("val-split"), parsing: .unconditional, help: "Which examples --val holds out: random (chosen by --seed, the default) or last.")
  var valSplit: String = "random"
  @Option(parsing: .unconditional, help: "Early stopping: epochs without a better validation accuracy (needs --val).") var patience: Int?
  @Option(name: .customLong("lr-schedule"), parsing: .unconditional, help: "Learning rate per epoch: constant; step:EPOCHS:GAMMA (StepLR); cosine (CosineAnnealingLR over --epochs); plateau:PATIENCE:FACTOR (ReduceLROnPlateau on the validation loss, or the training loss without --val).")
  var lrSchedule: String = "constant"
  @Option(parsing: .unconditional, help: "What --patience and best.safetensors watch: val_acc (the default) or val_loss.") var monitor: String = "val_acc"
  @Flag(name: .customLong("restore-best"), help: "At the end, make weights.safetensors the best epoch's weights (needs --val; the last step's checkpoint stays in checkpoints/ for --resume).")
  var restoreBest = false
  @Option(name: .customLong("min-delta"), parsing: .unconditional, help: "The least change of the monitored value that counts as an improvement (>= 0).")
  var minDelta: Double = 0
  @Option(name: .customLong("log-every"), parsing: .unconditional, help: "Print a line with the step, loss and img/s every N steps (default: 100 when standard error is not a terminal, which shows a live line instead; 0: never).")
  var logEvery: Int?
  @Option(parsing: .unconditional, help: "Stop after this many steps in all.") var steps: Int?
  @Option(parsing: .unconditional, help: "Data directory: IDX files (train-/t10k-images-idx3-ubyte[.gz], ...), CIFAR-10 binary (data_batch_1.bin ... test_batch.bin) or CIFAR-100 binary (train.bin, test.bin).") var data: String?
  @Option(parsing: .unconditional, help: "Input normalisation (x/255 - mean) / std: mnist (MNIST's 0.1307 and 0.3081, the default), imagenet (0.485,0.456,0.406 and 0.229,0.224,0.225, torchvision's pretrained models') or data (measured on the training images, per channel for colour data, e.g. Fashion-MNIST or CIFAR-10). Saved in the checkpoint; eval and predict use it.")
  var normalize: String = "mnist"
  @Option(parsing: .unconditional, help: "Transforms of every image as it is read, before augmentation and normalisation: resize:N (shorter side), resize:HxW, center_crop:N or HxW, comma-separated (resize:256,center_crop:224 reads photos of any size). Saved in the checkpoint; eval and predict use it.")
  var transform: String?
  @Option(parsing: .unconditional, help: "Keep the parameters whose state_dict names start with one of these prefixes fixed (comma-separated, as layer1.,conv1): the step computes no gradient for them nor backward through what only they need.")
  var freeze: String?
  @Option(name: .customLong("replace-head"), parsing: .unconditional, help: "Give the last dense layer (the classifier, PyTorch's fc or classifier.N) N outputs, freshly initialised under its own name: an imported model's own weights then train for N classes of your data.")
  var replaceHead: Int?
  @Option(name: .customLong("head-lr"), parsing: .unconditional, help: "The last layer's learning rate (a parameter group of its own, as in PyTorch), with --lr for the rest; a schedule scales both.")
  var headLR: Float?
  @Flag(name: .customLong("freeze-backbone"), help: "Keep every parameter fixed but the last layer's (the classifier, PyTorch's fc or classifier.N).")
  var freezeBackbone = false
  @Option(parsing: .unconditional, help: "Augment the training images, seeded and deterministic: random_resized_crop:N (photo folders: a random window of 8-100% of the photo's area and aspect 3/4-4/3, resized to NxN; first, and it replaces --transform for the training photos), crop:PAD (pad with zeros, cut a random window), flip (left-right, p = 1/2), shift:PX (random shift up to PX pixels), rotate:DEG (random angle up to DEG), comma-separated in the order they apply (random_resized_crop:224,flip for photos; crop:4,flip for CIFAR; shift:2,rotate:10 for MNIST).")
  var augment: String?

  @Option(parsing: .unconditional, help: "Normalisation mean, or one per channel comma-separated (0.4914,0.4822,0.4465), instead of --normalize.") var mean: String?
  @Option(parsing: .unconditional, help: "Normalisation standard deviation (> 0), or one per channel, as many as --mean.") var std: String?
  @Option(parsing: .unconditional, help: "Directory for checkpoints (default runs/GRAPH).") var out: String?
  @Flag(help: "Continue from the checkpoint in the output directory.") var resume = false
  @Flag(help: "Start afresh in an output directory that holds an earlier run, deleting its checkpoints (without it, such a directory is refused).")
  var overwrite = false
  @Option(parsing: .unconditional, help: "Split every batch into this many shards, computed in parallel; every back end (the interpreter too) averages the shard gradients in shard order. Results depend on the shard count, never on --threads.")
  var shards: Int = 2
  @Option(parsing: .unconditional, help: "Threads for the shards (default: all CPUs).") var threads: Int?
  @Option(name: .customLong("save-every"), parsing: .unconditional, help: "Also write a checkpoint every N steps (default: at the end of each epoch only).")
  var saveEvery: Int?
  @Flag(name: .customLong("no-report"), help: "Do not write report.html at the end.") var noReport = false
  @Flag(name: .customLong("check-numerics"), help: "On a non-finite loss, name the first op that produced it.") var checkNumerics = false
  @Flag(help: "At the end, print where one shard's training step spent its time, kernel by kernel (.graph line and statement), slowest first (compiled back ends; the step is timed throughout).")
  var profile = false

  func validate() throws {
    guard batch >= 1 else { throw ValidationError("--batch must be at least 1, got \(batch)") }
    guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1, got \(epochs)") }
    guard val >= 0 && val < 1 else { throw ValidationError("--val must be in [0, 1), got \(val)") }
    guard lr > 0 && lr.isFinite else { throw ValidationError("--lr must be a positive number, got \(lr)") }
    guard momentum >= 0 && momentum < 1 else { throw ValidationError("--momentum must satisfy 0 <= momentum < 1, got \(momentum)") }
    guard weightDecay >= 0 && weightDecay.isFinite else { throw ValidationError("--weight-decay must be a non-negative number, got \(weightDecay)") }
    if let patience {
      guard patience >= 1 else { throw ValidationError("--patience must be at least 1, got \(patience)") }
      guard val > 0 else { throw ValidationError("--patience needs a validation split to watch: add --val, e.g. --val 0.2") }
    }
    if let saveEvery, saveEvery < 1 { throw ValidationError("--save-every must be at least 1, got \(saveEvery)") }
    guard epochs <= Self.maxEpochs else { throw ValidationError("--epochs must be at most \(Self.maxEpochs), got \(epochs)") }
    guard Optimizer.Kind(rawValue: optimizer) != nil else { throw ValidationError("--optimizer must be adam or sgd") }
    if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
    guard shards >= 1, batch % shards == 0 else { throw ValidationError("--batch \(batch) must split into --shards \(shards) equal parts") }
    try validateThreads(threads)
    do { _ = try LRSchedule(parsing: lrSchedule) } catch { throw ValidationError("\(error)") }
    if restoreBest, val == 0 { throw ValidationError("--restore-best needs a validation split to choose the best epoch: add --val, e.g. --val 0.2") }
    guard TrainingOptions.ValidationSplit(rawValue: valSplit) != nil else { throw ValidationError("--val-split must be random or last, got '\(valSplit)'") }
    guard TrainingOptions.Monitor(rawValue: monitor) != nil else { throw ValidationError("--monitor must be val_acc or val_loss, got '\(monitor)'") }
    guard minDelta >= 0, minDelta.isFinite else { throw ValidationError("--min-delta must be a non-negative number, got \(minDelta)") }
    if let logEvery, logEvery < 0 { throw ValidationError("--log-every must be at least 0, got \(logEvery)") }
    guard ["mnist", "imagenet", "data"].contains(normalize) else { throw ValidationError("--normalize must be mnist, imagenet or data, got '\(normalize)'") }
    if let transform { _ = try InputOptions.transforms(transform) }
    if let headLR, !(headLR.isFinite && headLR > 0) { throw ValidationError("--head-lr must be a positive number, got \(headLR)") }
    if let headLR, !(headLR / lr).isFinite { throw ValidationError("--head-lr \(headLR) over --lr \(lr) is not a finite ratio") }
    if let replaceHead, !(2...Self.mostClasses).contains(replaceHead) {
      throw ValidationError("--replace-head takes 2 to \(Self.mostClasses) outputs, got \(replaceHead)")
    }
    guard (mean == nil) == (std == nil) else { throw ValidationError("--mean and --std go together") }
    if let augment {
      do { _ = try Augmentation(parsing: augment) } catch { throw ValidationError("\(error)") }
    }
    if let mean, let std, Normalization.parse(mean, std) == nil {
      throw ValidationError("--mean must be numbers and --std positive numbers, as many of each (one, or one per channel); got '\(mean)' and '\(std)'")
    }
  }

  /// The normalisation this run asks for: --mean/--std, else measured on the training set, else MNIST's.
  func normalization(_ train: ImageDataset) throws -> Normalization {
    if let mean, let std, let (means, stds) = Normalization.parse(mean, std) { return Normalization(means: means, stds: stds) }
    return normalize == "data" ? try train.measuredNormalization() : Normalization.presets[normalize]!
  }

  /// The most outputs `--replace-head` gives a classifier (ImageNet-21k has 21,841 classes).
  static let mostClasses = 1 << 16

  /// More epochs than any run could finish; keeps step arithmetic far from overflow.
  static let maxEpochs = 1_000_000

  /// Set on the non-primary ranks of a distributed run.
  var quiet = false

  /// Prints, except on the non-primary ranks of a distributed run.
  func say(_ s: String) { if !quiet { print(s) } }

  /// Says what the code is built for, and warns when bf16 GEMMs have no bf16 dot product to run on.
  func announce(_ target: Target) {
    say("target: \(target)")
    if target.precision == .bf16, !target.bf16Dot {
      printError("warning: \(target.cpu) has no bf16 dot product: the bf16 GEMMs compute the same bits with f32 FMAs, slower than --precision fp32\n")
    }
  }

  mutating func run() throws {
    lineBufferStandardOutput()
    let f = try file.map { try GraphFile(path: $0, verbose: modelOptions.verbose) } ?? GraphFile(builtin: "simplecnn.graph", text: defaultGraph)
    let model = try reportingErrors { try headReplaced(f.graph) }
    let shapes = try f.run { () throws(DiagnosticList) in try inferShapes(model, batch: batch) }
    guard model.minimize != nil else { throw DataError("\(f.path): the graph has no 'minimize' statement; training needs a scalar loss") }
    let graph = try reportingErrors { try frozen(model) }
    // The run directory keeps the graph it trains: the file's, or with a new head the graph as now.
    let source = replaceHead == nil ? f.source : Array(Printer.print(model).utf8)
    let dir = data ?? defaultDataDirectory()
    let mpi = try distributedRuntime()
    let outDir = out ?? "runs/\(f.graph.name)"
    var lock: RunLock?
    defer { withExtendedLifetime(lock) {} }
    try reportingErrors {
      // A target this machine cannot run is refused before the data is read.
      let target = try targetOptions.resolve(runsHere: true)
      let (trainSet, testSet) = try loadData(dir, model, shapes)
      var params = Parameters(graph: model, shapes: shapes, seed: seed)
      // An imported model starts from its own weights (a new head from its fresh ones).
      if let w = f.initializers { try params.load(withNewHead(w, params, model), path: f.path, stateKey: model.stateKey) }
      // The run directory keeps the graph it trained, so reports and evaluation need nothing else.
      // One run per directory: the lock lives as long as this process, and what killed runs left is removed.
      if !quiet { lock = try claimRunDirectory(outDir) }
      var opt = Optimizer(kind: Optimizer.Kind(rawValue: optimizer)!, learningRate: lr, momentum: momentum, weightDecay: weightDecay)
      opt.rateScales = headRates(model)
      var options = trainingOptions(outDir, primary: mpi.map { $0.rank == 0 } ?? true)
      options.normalization = try normalization(trainSet)
      options.transforms = try transform.map(InputOptions.transforms) ?? []
      options.dataFingerprint = trainSet.fingerprint()
      options.classNames = trainSet.classNames
      options.augmentation = try augment.map { try Augmentation(parsing: $0) } ?? .none
      // Only the primary evaluates; the evaluation programs are compiled with the training step.
      let calls = options.primary ? options.trainingEvaluationCalls(trainCount: trainSet.count, testCount: testSet.count) : []
      let kind = jit ? .jit : backend
      if kind != .interp { announce(target) }
      switch kind {
      case .jit:
        let b = try CompiledBackend(name: "jit", graph: graph, batch: batch, optimizer: opt, compiler: try JITCompiler(target: target, cache: cacheOptions.cache),
                                    inferenceCalls: calls, shards: shards, threads: threads, profile: profile, mpi: mpi)
        let c = b.compiler
        let cached = c.modulesFromCache == 0 ? "" : c.modulesFromCache == c.modulesCompiled ? ", every module from the cache" : ", \(c.modulesFromCache) of \(c.modulesCompiled) modules from the cache"
        say(String(format: "jit: %.3f s before step 1 (lowering and IR %.3f s, optimisation (%@) and code generation on %d threads %.3f s%@, linking %.3f s); the evaluation programs compile meanwhile",
                   b.compileSeconds, b.compileSeconds - c.optimizeSeconds - c.codegenSeconds, Module.pipeline, c.compileThreads, c.optimizeSeconds, cached, c.codegenSeconds))
        try runCompiled(b, Trainer(backend: b, graph: graph, parameters: params, optimizer: opt, options: options), trainSet, testSet, outDir, mpi, source)
      case .swift:
        let b = try CompiledBackend(name: "swift", graph: graph, batch: batch, optimizer: opt,
                                    compiler: try SwiftCompiler(source: f.path, target: target), inferenceCalls: calls, shards: shards, threads: threads, profile: profile, mpi: mpi)
        say(String(format: "swift: generated, compiled (swiftc -Ounchecked) and loaded in %.3f s%@", b.compileSeconds,
                     b.compiler.cacheHits > 0 ? " (cached library)" : ""))
        try runCompiled(b, Trainer(backend: b, graph: graph, parameters: params, optimizer: opt, options: options), trainSet, testSet, outDir, mpi, source)
      case .interp:
        try run(Trainer(backend: try InterpreterBackend(graph: graph, shards: shards, bf16Products: target.precision == .bf16), graph: graph, parameters: params, optimizer: opt, options: options), trainSet, testSet, outDir, source)
      }
    }
    // Written once the training back end and its buffers are gone, so the report adds nothing to peak memory.
    if jit || backend != .interp, !quiet, !noReport {
      try reportingErrors { say("report: \(try writeReport(runDirectory: outDir, data: data ?? defaultDataDirectory()))") }
    }
  }

  /// Where the head is: the last node with parameters (a classifier's dense layer, PyTorch's fc or classifier.N),
  /// which --replace-head, --head-lr and --freeze-backbone name.
  static func headIndex(_ g: Graph) -> Int? { g.nodes.lastIndex { !$0.op.parameterSuffixes.isEmpty } }

  /// The graph with its last dense layer (the classifier) given `--replace-head` outputs, under its own name.
  func headReplaced(_ g: Graph) throws -> Graph {
    guard let n = replaceHead else { return g }
    guard let i = Self.headIndex(g) else { throw DataError("--replace-head: the graph has no layer with parameters") }
    guard case .dense(var attrs) = g.nodes[i].op, !attrs.scaled else {
      throw DataError("--replace-head: the last layer with parameters, '\(g.stateKey(g.nodes[i].name))', is \(g.nodes[i].op.spelling), not a dense layer")
    }
    var out = g
    attrs.units = n
    out.nodes[i].op = .dense(attrs)
    say("head: \(g.stateKey(g.nodes[i].name)) replaced by a dense layer of \(n) outputs, freshly initialised")
    return out
  }

  /// The classifier's learning rate over the others' (`--head-lr`, a parameter group of its own), by parameter.
  func headRates(_ g: Graph) -> [String: Float] {
    guard let headLR, let head = Self.headIndex(g).map({ g.nodes[$0] }) else { return [:] }
    say("head: \(g.stateKey(head.name)) trains at lr \(headLR), the rest at \(lr)")
    return Dictionary(uniqueKeysWithValues: head.op.parameterSuffixes.map { ("\(head.name).\($0)", headLR / lr) })
  }

  /// `weights` with the new head's tensors (`--replace-head`) taken from `fresh`.
  func withNewHead(_ weights: SafeTensors, _ fresh: Parameters, _ g: Graph) -> SafeTensors {
    guard replaceHead != nil, let head = Self.headIndex(g).map({ g.nodes[$0] }) else { return weights }
    var st = weights
    for suffix in head.op.parameterSuffixes {
      let name = "\(head.name).\(suffix)"
      st.tensors[g.stateKey(name)] = (shape: fresh.shapes[name]!, data: fresh.values[name]!)
    }
    return st
  }

  /// The graph with the parameters `--freeze` and `--freeze-backbone` name frozen, and a line saying what that
  /// saves: the step's FLOPs per image with and without them.
  func frozen(_ g: Graph) throws -> Graph {
    var names = Set<String>()
    if freezeBackbone {
      guard let head = Self.headIndex(g).map({ g.nodes[$0] }) else { throw DataError("the graph has no parameters to freeze") }
      names = Set(g.parameterNames.filter { !$0.hasPrefix(head.name + ".") })
    }
    for prefix in (freeze ?? "").split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !prefix.isEmpty {
      let matched = g.parameterNames.filter { g.stateKey($0).hasPrefix(prefix) || $0.hasPrefix(prefix) }
      guard !matched.isEmpty else {
        throw DataError("--freeze \(prefix) names no parameter; they are \(g.parameterNames.prefix(6).map(g.stateKey).joined(separator: ", "))\(g.parameterNames.count > 6 ? ", ..." : "")")
      }
      names.formUnion(matched)
    }
    guard !names.isEmpty else { return g }
    guard names.count < g.parameterNames.count else { throw DataError("--freeze leaves no parameter to train") }
    var out = g
    out.frozen = names
    let flops = { (graph: Graph) throws -> Int in
      let t = try Pipeline(batch: 1, purpose: .training, fuse: false).run(graph, to: .grad)
      return summarize(t.graph, t.shapes).reduce(0) { $0 + $1.flopsPerImage }
    }
    let (all, kept) = (try flops(g), try flops(out))
    say(String(format: "frozen: %d of %d parameter tensors; the step takes %.2f MFLOP per image instead of %.2f (%.0f%% less)", names.count, g.parameterNames.count,
               Double(kept) / 1e6, Double(all) / 1e6, 100 * (1 - Double(kept) / Double(max(all, 1)))))
    return out
  }

  /// Locks the run directory for this process, removes what killed runs left there, and refuses one that holds
  /// a run unless this run resumes it or replaces it (--overwrite deletes its checkpoints).
  func claimRunDirectory(_ outDir: String) throws -> RunLock {
    let lock = try RunLock(directory: outDir)
    let run = RunDirectory(outDir)
    run.removeStaleTemporaries()
    if !resume, let step = run.newestStep() {
      guard overwrite else {
        throw DataError("\(outDir) holds a run (checkpoint of step \(step)); continue it with --resume, start afresh there with --overwrite, or choose another --out")
      }
      try run.removeRun()
    }
    return lock
  }

  /// Under mpirun: one rank per process, data-parallel over the shards; rank 0 alone prints and writes.
  mutating func distributedRuntime() throws -> MPIRuntime? {
    guard MPIRuntime.launched else { return nil }
    let mpi = try reportingErrors { try MPIRuntime() }
    guard jit || backend != .interp else { throw DataError("distributed training needs a compiled back end (--jit or --backend swift)") }
    if mpi.rank != 0 { quiet = true }
    return mpi
  }

  /// The training and test sets of `dir`, checked against the graph's image input and the batch size
  /// before anything is compiled or allocated for a batch that could never be filled.
  func loadData(_ dir: String, _ graph: Graph, _ shapes: ShapeTable) throws -> (train: ImageDataset, test: ImageDataset) {
    let start = Date()
    let transforms = try transform.map(InputOptions.transforms) ?? []
    guard let img = graph.inputs.first(where: { $0.dtype == .f32 }) else { throw DataError("the graph has no f32 image input") }
    // --augment random_resized_crop:N reads each training photo as it is, in place of --transform (which the test
    // set and the checkpoint keep); folders read with either stream from disk in the graph's channels.
    let photo = try augment.map { try Augmentation(parsing: $0).photoTransforms } ?? []
    let channels = shapes[img.name]!.dims[1]
    let trainSet = try ImageDataset.loadSet(directory: dir, training: true, transforms: photo.isEmpty ? transforms : photo, channels: channels)
    let testSet = try ImageDataset.loadSet(directory: dir, training: false, transforms: transforms, channels: channels)
    try trainSet.validateImages(forInput: shapes[img.name]!.dims)
    guard batch <= trainSet.count else { throw DataError("--batch \(batch) exceeds the \(trainSet.count) training examples in \(dir)") }
    try testSet.validateImages(forInput: shapes[img.name]!.dims)
    let streamed = trainSet.isStreamed ? ", photos read per batch" : ""
    say(String(format: "data: %@ (%d train, %d test images%@) loaded in %.2f s", dir, trainSet.count, testSet.count, streamed, Date().timeIntervalSince(start)))
    return (trainSet, testSet)
  }

  /// The trainer's options from the command line; `primary` is the process that prints and writes.
  func trainingOptions(_ outDir: String, primary: Bool) -> TrainingOptions {
    var options = TrainingOptions(outputDirectory: outDir)
    options.epochs = epochs
    options.batchSize = batch
    options.seed = seed
    options.validationFraction = val
    options.patience = patience
    options.maxSteps = steps
    options.saveEvery = saveEvery
    options.monitor = TrainingOptions.Monitor(rawValue: monitor)!
    options.validationSplit = TrainingOptions.ValidationSplit(rawValue: valSplit)!
    options.schedule = (try? LRSchedule(parsing: lrSchedule)) ?? .constant
    options.minDelta = minDelta
    options.primary = primary
    return options
  }

  /// Trains with a compiled back end; under MPI, then checks that every rank ends with the same weights.
  func runCompiled<C>(_ b: CompiledBackend<C>, _ t: Trainer<CompiledBackend<C>>, _ trainSet: ImageDataset, _ testSet: ImageDataset,
                      _ outDir: String, _ mpi: MPIRuntime?, _ graphSource: [UInt8]) throws {
    try run(t, trainSet, testSet, outDir, graphSource)
    if profile { say(Self.profileTable(b.profileReport(), algorithms: b.convAlgorithms.mapValues(\.label))) }
    if let mpi, let h = try b.checkRanksAgree() {
      say("all \(mpi.size) ranks hold identical weights (hash \(String(h, radix: 16)))")
    }
  }

  /// The kernels that took the most of a step, slowest first, as a table: line, statement, op (and conv
  /// algorithm), milliseconds per step and share; what the rest took, in all and by op.
  static func profileTable(_ rows: [(name: String, op: String, line: Int, msPerStep: Double, share: Double)], algorithms: [String: String]) -> String {
    let shown = 20, shownOps = 8, sorted = rows.sorted { $0.msPerStep > $1.msPerStep }
    var lines = ["profile of one shard's training step (\(String(format: "%.1f", rows.map(\.msPerStep).reduce(0, +))) ms), slowest first:",
                 "  line  statement                      op                               ms/step  share"]
    for r in sorted.prefix(shown) {
      let op = r.op + (algorithms[r.name].map { " (\($0))" } ?? "")
      lines.append(String(format: "  %4d  %@  %@  %7.2f  %4.1f%%", r.line, r.name.padding(toLength: 29, withPad: " ", startingAt: 0),
                          op.padding(toLength: 31, withPad: " ", startingAt: 0), r.msPerStep, r.share * 100))
    }
    let rest = sorted.dropFirst(shown)
    if !rest.isEmpty {
      lines.append(String(format: "  the other %d kernels: %.2f ms/step, %.1f%%", rest.count, rest.map(\.msPerStep).reduce(0, +), rest.map(\.share).reduce(0, +) * 100))
      // Many small kernels of one op can outweigh a large one: the rest by op, largest first.
      let byOp = Dictionary(grouping: rest) { $0.op }.mapValues { $0.map(\.msPerStep).reduce(0, +) }.sorted { ($0.value, $1.key) > ($1.value, $0.key) }
      lines.append("    by op: " + byOp.prefix(shownOps).map { String(format: "%@ %.2f", $0.key, $0.value) }.joined(separator: ", ")
                   + (byOp.count > shownOps ? String(format: ", others %.2f", byOp.dropFirst(shownOps).map(\.value).reduce(0, +)) : ""))
    }
    return lines.joined(separator: "\n")
  }

  /// Trains; the run directory gets the graph once a resumed checkpoint is known to be this graph's.
  func run<B: Backend>(_ t: Trainer<B>, _ trainSet: ImageDataset, _ testSet: ImageDataset, _ outDir: String, _ graphSource: [UInt8]) throws {
      var trainer = t
      trainer.checkNumerics = checkNumerics
      // SIGINT: finish the current step, save a resumable checkpoint, exit 130. A second one exits at once;
      // checkpoints are written atomically, so even that leaves no corrupt file.
      // Under MPI every rank must stop at the same step, so there SIGINT keeps its default: the ranks end at
      // once and the last checkpoint, written atomically, stays intact.
      let interrupt = InterruptFlag()
      var source: DispatchSourceSignal?
      if !MPIRuntime.launched {
        signal(SIGINT, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        // At once: without the exit handlers, which would tear down the compiler's global state under a
        // compile still running on another thread (the evaluation programs').
        source?.setEventHandler {
          if interrupt.raise() {
            fflush(nil)  // every stream
            _exit(130)
          }
        }
        source?.resume()
        trainer.shouldStop = { interrupt.isRaised }
      }
      defer { source?.cancel() }
      if resume {
        try trainer.resume(from: outDir)
        say("resumed from \(outDir) at step \(trainer.optimizer.step)")
      }
      // The run directory keeps the graph it trained, so reports and evaluation need nothing else.
      if !quiet { try writeAtomically(graphSource, to: Path.join(outDir, "model.graph")) }
      say("training \(trainer.graph.name) with the \(trainer.backend.name) back end: \(formatCount(trainer.parameters.count)) parameters, batch \(batch), \(trainer.optimizer.settings), seed \(seed), inputs \(trainer.options.transforms.isEmpty ? "" : "\(trainer.options.transforms.spec), ")\(trainer.options.normalization)\(trainer.options.augmentation.transforms.isEmpty ? "" : ", augment \(trainer.options.augmentation)")\(trainer.options.schedule == .constant ? "" : ", lr schedule \(trainer.options.schedule)")")
      attachProgress(&trainer)
      _ = try trainer.train(train: trainSet, test: testSet)
      // From here on (the last message, the report) Ctrl-C ends the process at once; one that came after
      // the last step, while the final checkpoint was being written, ends it now that the checkpoint is whole.
      source?.cancel()
      if source != nil { restoreDefaultInterrupt() }
      if !trainer.interrupted, interrupt.isRaised {
        say("interrupted after the last step: checkpoint saved in \(outDir) (step \(trainer.optimizer.step))")
        flushStandardOutput()
        throw ExitCode(130)
      }
      if trainer.interrupted {
        if isatty(2) != 0 { printError("\r\u{1B}[K") }
        say("interrupted at step \(trainer.optimizer.step): checkpoint saved in \(outDir); continue with --resume")
        flushStandardOutput()
        throw ExitCode(130)
      }
      if let last = trainer.stoppedEarlyAfter { say("stopped early after epoch \(last): \(monitor) did not improve for \(patience ?? 0) epochs") }
      if let b = trainer.best { say("best epoch \(b.epoch): \(monitor) \(Self.format(b.value, monitor)); its weights: \(trainer.bestPath)") }
      if restoreBest, let e = try trainer.restoreBest() {
        say("weights: \(trainer.weightsPath) now holds epoch \(e)'s weights; the last step's checkpoint is in \(trainer.run.checkpointsPath) for --resume")
      } else {
        say("checkpoint: \(trainer.weightsPath) (step \(trainer.optimizer.step))")
      }
  }

  /// Progress output: on a terminal a live line on standard error; otherwise (piped, redirected) a plain
  /// line every --log-every steps; and a line per epoch.
  func attachProgress<B: Backend>(_ trainer: inout Trainer<B>) {
    let tty = isatty(2) != 0
    let every = logEvery ?? (tty ? 0 : Self.defaultLogEvery)
    var lastPrint = Date.distantPast
    let quiet = self.quiet
    trainer.onProgress = { p in
      guard !quiet else { return }
      if every > 0, p.step % every == 0 {
        if tty { printError("\r\u{1B}[K") }
        print(String(format: "epoch %d step %d/%d: loss %.4f, %.0f img/s", p.epoch, p.step, p.stepsInEpoch, p.runningLoss, p.imagesPerSecond))
        flushStandardOutput()
      }
      guard tty, Date().timeIntervalSince(lastPrint) > 0.25 || p.step == p.stepsInEpoch else { return }
      lastPrint = Date()
      printError(String(format: "\repoch %d  step %d/%d  %.0f img/s  loss %.4f  ETA %.0fs   ", p.epoch, p.step, p.stepsInEpoch, p.imagesPerSecond, p.runningLoss, p.etaSeconds))
    }
    trainer.onEpoch = { r in
      guard !quiet else { return }
      if tty { printError("\r\u{1B}[K") }
      print(Self.epochLine(r))
      flushStandardOutput()
    }
  }

  /// Steps between plain progress lines when standard error is not a terminal (the tutorials print every 100 batches).
  static let defaultLogEvery = 100

  /// An accuracy as a percentage, a loss as a number.
  static func format(_ v: Double, _ monitor: String) -> String {
    monitor == "val_acc" ? String(format: "%.2f%%", v * 100) : String(format: "%.4f", v)
  }

  /// The line printed after each epoch: train, validation and test loss and accuracy, and a cut-short note.
  static func epochLine(_ r: EpochReport) -> String {
    var line = String(format: "epoch %d: ", r.epoch)
    if let lr = r.learningRate { line += String(format: "lr %.3g, ", lr) }
    line += String(format: "train loss %.4f, train acc %.2f%%, ", r.trainLoss, r.trainAccuracy * 100)
    if let v = r.validationAccuracy, let l = r.validationLoss { line += String(format: "val loss %.4f, val acc %.2f%%, ", l, v * 100) }
    if let l = r.testLoss { line += String(format: "test loss %.4f, ", l) }
    line += String(format: "test acc %.2f%%  (%.1f s, %.0f img/s%@)", r.testAccuracy * 100, r.seconds, r.imagesPerSecond,
                   r.inputWaitSeconds.map { String(format: ", waited %.2f s for photos", $0) } ?? "")
    if let s = r.steps, let all = r.stepsPerEpoch, s < all { line += " - \(s) of \(all) steps (stopped by --steps)" }
    return line
  }
}

/// SIGINT's default action again, unblocked on this thread too: a parent may start cnnc with the signal
/// blocked (threads that spawn processes often block it), and then the default would never act.
func restoreDefaultInterrupt() {
  signal(SIGINT, SIG_DFL)
  var set = sigset_t()
  sigemptyset(&set)
  sigaddset(&set, SIGINT)
  pthread_sigmask(SIG_UNBLOCK, &set, nil)
}

/// Set from the SIGINT handler, read by the training loop.
final class InterruptFlag: @unchecked Sendable {
  private let lock = NSLock()
  private var raised = false
  /// Raises the flag; returns true if it was already raised (a second interrupt).
  func raise() -> Bool {
    lock.lock()
    defer { lock.unlock() }
    let again = raised
    raised = true
    return again
  }
  var isRaised: Bool {
    lock.lock()
    defer { lock.unlock() }
    return raised
  }
}
