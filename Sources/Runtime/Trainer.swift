import FileSystem
import Foundation
import GraphIR
import Passes

/// Settings of one training run.
public struct TrainingOptions: Sendable {
  public var epochs = 1
  public var batchSize = 64
  public var seed: UInt64 = 1
  /// Fraction of the training set held out for validation and early stopping.
  public var validationFraction = 0.0
  /// Which examples are held out: a random choice fixed by the seed (PyTorch's `random_split` with a
  /// seeded generator), or the last ones.
  public enum ValidationSplit: String, Sendable, CaseIterable { case random, last }
  public var validationSplit = ValidationSplit.random
  /// Stop after this many epochs without a better monitored value (nil: never).
  public var patience: Int?
  /// What early stopping and best.safetensors watch on the validation set.
  public enum Monitor: String, Sendable, CaseIterable { case valAccuracy = "val_acc", valLoss = "val_loss" }
  public var monitor = Monitor.valAccuracy
  /// The least change of the monitored value that counts as an improvement (PyTorch Lightning's `min_delta`).
  public var minDelta = 0.0
  /// Stop after this many steps in all (for short runs and tests).
  public var maxSteps: Int?
  /// Also write a checkpoint every this many steps (nil: only at the end of each epoch and on interrupt).
  public var saveEvery: Int?
  /// Directory for checkpoints.
  public var outputDirectory: String
  /// The learning rate per epoch, from the optimiser's rate as the base.
  public var schedule = LRSchedule.constant
  /// How images are normalised (saved in checkpoints; eval and predict read it back).
  public var normalization = Normalization.mnist
  /// The deterministic transforms every image was read with (`--transform`; saved in checkpoints for eval and predict).
  public var transforms: [ImageTransform] = []
  /// What checkpoints record of the inputs: the normalisation and the transforms.
  var inputMetadata: [String: String] { normalization.metadata.merging(ImageTransform.metadata(of: transforms)) { $1 } }
  /// How training images are augmented (none by default); evaluation images never are.
  public var augmentation = Augmentation.none
  /// Evaluation batch: big enough to keep the GEMMs efficient, small enough to keep the arenas small.
  public var evalBatch = 250
  /// False on the other ranks of a distributed run: only the primary evaluates and writes files.
  public var primary = true
  /// The training set's `ImageDataset.fingerprint`, kept in checkpoints so that a resumed run trains on the data
  /// the checkpoint's steps counted (nil: not checked).
  public var dataFingerprint: String?
  /// The training set's class names (image folders), kept in checkpoints for `predict`.
  public var classNames: [String]?
  public init(outputDirectory: String) { self.outputDirectory = outputDirectory }

  /// The image counts one evaluation of `count` images passes to the back end's `infer` (`evalBatch` at a
  /// time, then the rest), so a compiled back end can build those programs before training starts.
  public func evaluationCalls(_ count: Int) -> [Int] { Self.evaluationCalls(count, batch: evalBatch) }

  /// The image counts an evaluation of `count` images in calls of `batch` passes to `infer`.
  public static func evaluationCalls(_ count: Int, batch: Int) -> [Int] {
    count <= 0 ? [] : [min(batch, count), count % batch].filter { $0 > 0 }
  }

  /// The calls of a training run: its validation split of `trainCount` images and its `testCount` test images.
  public func trainingEvaluationCalls(trainCount: Int, testCount: Int) -> [Int] {
    evaluationCalls(testCount) + evaluationCalls(validationCount(trainCount))
  }

  /// The images `validationFraction` holds out of `trainCount`.
  public func validationCount(_ trainCount: Int) -> Int { Int(Double(trainCount) * validationFraction) }
}

/// Per-epoch figures.
public struct EpochReport: Sendable, Codable {
  /// How `history.json` spells a non-finite figure (a diverged loss): JSON has no such numbers.
  static let nonFinite = (positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")

  /// The largest history.json read (a run of a million epochs' figures is well under it).
  public static let maxHistoryBytes = 1 << 30

  /// The encoder of `history.json`: sorted keys, indented, non-finite figures as the strings of `nonFinite`.
  public static func historyEncoder() -> JSONEncoder {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: nonFinite.positiveInfinity,
                                                                   negativeInfinity: nonFinite.negativeInfinity, nan: nonFinite.nan)
    return encoder
  }

  /// A `history.json`'s epochs; anything else is an error naming the file.
  public static func decodeHistory(_ data: Data, path: String) throws -> [EpochReport] {
    let decoder = JSONDecoder()
    decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: nonFinite.positiveInfinity,
                                                                     negativeInfinity: nonFinite.negativeInfinity, nan: nonFinite.nan)
    do { return try decoder.decode([EpochReport].self, from: data) } catch {
      throw CheckpointError("\(path) is not a training history (damaged or not written by cnnc train)")
    }
  }

  public var epoch: Int
  public var trainLoss: Double
  public var trainAccuracy: Double
  public var validationAccuracy: Double?
  public var testAccuracy: Double
  /// Mean cross-entropy of the graph's output on the validation and test sets (absent in older histories).
  public var validationLoss: Double?
  public var testLoss: Double?
  /// The learning rate of the epoch, when a schedule varies it.
  public var learningRate: Double?
  /// Steps trained in the epoch and the steps a full epoch has (they differ when --steps cut it short).
  public var steps: Int?
  public var stepsPerEpoch: Int?
  /// The loss of each step of the epoch, in order (absent in older histories).
  public var stepLosses: [Double]?
  /// The best epoch so far by the monitored value (its weights are best.safetensors), and whether early
  /// stopping ended the run after this epoch.
  public var bestEpoch: Int?
  public var stoppedEarly: Bool?
  /// Seconds the epoch's steps waited for their photos (streamed sets only): near zero when reading keeps ahead.
  public var inputWaitSeconds: Double?

  public init(epoch: Int, trainLoss: Double, trainAccuracy: Double, validationAccuracy: Double?, testAccuracy: Double,
              imagesPerSecond: Double, seconds: Double) {
    self.epoch = epoch
    self.trainLoss = trainLoss
    self.trainAccuracy = trainAccuracy
    self.validationAccuracy = validationAccuracy
    self.testAccuracy = testAccuracy
    self.imagesPerSecond = imagesPerSecond
    self.seconds = seconds
  }
  public var imagesPerSecond: Double
  public var seconds: Double
}

/// Progress while an epoch runs.
public struct StepProgress: Sendable {
  public var epoch: Int
  public var step: Int
  public var stepsInEpoch: Int
  public var runningLoss: Double
  public var imagesPerSecond: Double
  public var etaSeconds: Double
}

/// The training loop: shuffles per epoch from the seed, steps the back end, updates with the
/// optimiser, evaluates, and writes resumable checkpoints atomically.
public struct Trainer<B: Backend> {
  public var backend: B
  public var graph: Graph
  /// Hyper-parameters and the step count; the state tensors live in the back end while it trains.
  public var optimizer: Optimizer
  public var options: TrainingOptions
  public var classes: Int
  public var onProgress: (StepProgress) -> Void = { _ in }
  /// Asked before every step; when it says yes the trainer saves a resumable checkpoint and stops.
  public var shouldStop: () -> Bool = { false }
  /// With `checkNumerics`, a non-finite loss is traced to the first op that produced it.
  public var checkNumerics = false
  /// Set when `shouldStop` ended the run.
  public private(set) var interrupted = false
  /// The best epoch so far by `options.monitor`, and its value (its weights are best.safetensors).
  public private(set) var best: (epoch: Int, value: Double)?
  /// The rate the schedule starts from (the optimiser's rate as given).
  public let baseLearningRate: Float
  /// Set when early stopping ended the run: the last epoch trained.
  public private(set) var stoppedEarlyAfter: Int?
  /// Per-epoch figures of this run so far (restored by `resume`).
  public private(set) var history: [EpochReport] = []
  /// Sums over the steps of the current epoch so far, saved in every checkpoint so a resumed epoch's
  /// figures cover all of its steps.
  var partial = EpochSums()
  public var onEpoch: (EpochReport) -> Void = { _ in }
  /// The dimensions of the graph's image input, which every dataset's images must match.
  public let imageInputDims: [Int]

  public init(backend: B, graph: Graph, parameters: Parameters, optimizer: Optimizer, options: TrainingOptions) throws {
    baseLearningRate = optimizer.learningRate
    self.backend = backend
    self.graph = graph
    self.optimizer = optimizer
    try self.backend.load(parameters, optimizer)
    self.options = options
    let shapes = try inferShapes(graph, batch: options.batchSize)
    guard let out = shapes[graph.output!], out.dims.count == 2 else {
      throw DataError("the graph's output must be [N, classes] logits to train a classifier")
    }
    classes = out.dims[1]
    guard let image = graph.inputs.first(where: { $0.dtype == .f32 }) else { throw DataError("the graph has no f32 image input") }
    imageInputDims = shapes[image.name]!.dims
  }

  public var run: RunDirectory { RunDirectory(options.outputDirectory) }
  public var weightsPath: String { run.file(RunDirectory.weightsFile) }
  public var historyPath: String { run.file(RunDirectory.historyFile) }
  public var bestPath: String { run.file("best.safetensors") }

  /// The current parameters (from the back end).
  public var parameters: Parameters { backend.parameters() }

  /// The optimiser with its current state tensors.
  public var optimizerWithState: Optimizer {
    var o = optimizer
    o.state = backend.optimizerState()
    return o
  }

  /// Commits weights (a plain `state_dict`), optimiser state and history as one checkpoint of this step.
  public func saveCheckpoint() throws {
    guard options.primary else { return }
    let parameters = self.parameters
    var meta = ["format": "pt", "cnnc.graph": graph.name, "cnnc.step": "\(optimizer.step)", "cnnc.seed": "\(options.seed)"]
      .merging(options.inputMetadata) { $1 }.merging(planMetadata) { $1 }
    if let d = options.dataFingerprint { meta["cnnc.data"] = d }
    if let names = options.classNames { meta[ImageDataset.classNamesKey] = names.joined(separator: "\n") }
    var st = SafeTensors(metadata: meta.merging(["cnnc.optimizer": optimizer.kind.rawValue, "cnnc.lr": "\(optimizer.learningRate)",
                                                 "cnnc.lr_schedule": "\(options.schedule)", "cnnc.base_lr": "\(baseLearningRate)"]) { $1 }
      .merging(partial.metadata) { $1 })
    for (k, v) in backend.optimizerState() {
      let param = String(k.drop { $0 != "." }.dropFirst())
      st.tensors[k] = (parameters.shapes[param] ?? [v.count], v)
    }
    let encoder = EpochReport.historyEncoder()
    do {
      try run.save(step: optimizer.step, files: [
        (RunDirectory.weightsFile, parameters.safeTensors(metadata: meta, stateKey: graph.stateKey).serialized()),
        (RunDirectory.optimizerFile, st.serialized()),
        (RunDirectory.historyFile, Array(try encoder.encode(history))),
      ])
    } catch {
      let last = run.checkpointSteps().first.map { "the last checkpoint (step \($0)) is intact" } ?? "no checkpoint was written"
      throw CheckpointError("cannot save the checkpoint of step \(optimizer.step) in \(options.outputDirectory): \(error); \(last)")
    }
  }

  /// What fixes the step plan of a run (which images each step takes): a resumed run must have the same.
  var planMetadata: [String: String] {
    ["cnnc.batch": "\(options.batchSize)", "cnnc.val": "\(options.validationFraction)", "cnnc.val_split": options.validationSplit.rawValue]
  }

  /// Refuses a checkpoint whose step plan (batch, validation split) or training data differ from this run's: its
  /// step count would index other images, its epoch sums would be divided by another step count.
  func checkPlan(_ saved: [String: String], _ source: String) throws {
    let option = ["cnnc.batch": "--batch", "cnnc.val": "--val", "cnnc.val_split": "--val-split"]
    for (key, mine) in planMetadata.sorted(by: { $0.key < $1.key }) {
      if let theirs = saved[key], theirs != mine {
        throw CheckpointError("\(source) was trained with \(option[key]!) \(theirs); resume it with the same (this run has \(mine))")
      }
    }
    if let theirs = saved["cnnc.data"], let mine = options.dataFingerprint, theirs != mine {
      throw CheckpointError("\(source) was trained on other training data (fingerprint \(theirs), this run's is \(mine)); resume it with the same --data")
    }
  }

  /// Restores the newest complete checkpoint of a run directory (or, for runs written before checkpoints
  /// had their own directories, the top-level pair): weights, optimiser state, step and history.
  public mutating func resume(from dir: String) throws {
    let store = RunDirectory(dir)
    let source = store.checkpointSteps().first.map(store.checkpoint) ?? dir
    let w = Path.join(source, RunDirectory.weightsFile)
    let o = Path.join(source, RunDirectory.optimizerFile)
    guard FileManager.default.fileExists(atPath: w) else { throw CheckpointError("\(dir) holds no checkpoint to resume (no \(RunDirectory.weightsFile))") }
    let ws = try SafeTensors.read(from: w)
    let os = try SafeTensors.read(from: o)
    var parameters = self.parameters
    try parameters.load(ws, path: w, stateKey: graph.stateKey)
    // A resumed run keeps the normalisation it was trained with.
    if let n = try Normalization(metadata: ws.metadata) { options.normalization = n }
    guard let step = ws.metadata["cnnc.step"].flatMap(Int.init), step >= 0, os.metadata["cnnc.step"] == "\(step)" else {
      throw CheckpointError("\(source): weights and optimiser state are not from the same step (or the step is not a count)")
    }
    guard ws.metadata["cnnc.seed"] == os.metadata["cnnc.seed"] else {
      throw CheckpointError("\(source): weights and optimiser state come from runs with different seeds")
    }
    try checkPlan(ws.metadata, source)
    if let saved = ws.metadata["cnnc.seed"], saved != "\(options.seed)" {
      throw CheckpointError("\(source) was trained with --seed \(saved); resume it with the same seed (this run has \(options.seed))")
    }
    let state = try OptimizerCheckpoint(os, path: o, parameters: parameters, kind: optimizer.kind, momentum: optimizer.momentum, step: step)
    // The schedule's rates follow from the base rate and the history: both must be this run's.
    for (key, mine) in [("cnnc.lr_schedule", "\(options.schedule)"), ("cnnc.base_lr", "\(baseLearningRate)")] {
      if let saved = os.metadata[key], saved != mine {
        throw CheckpointError("\(source) was trained with \(key == "cnnc.base_lr" ? "--lr \(saved)" : "--lr-schedule \(saved)"); resume it with the same (this run has \(mine))")
      }
    }
    optimizer.state = state.tensors
    optimizer.step = step
    try backend.load(parameters, optimizer)
    optimizer.state = [:]
    partial = EpochSums(metadata: os.metadata)
    let historyFile = Path.join(source, RunDirectory.historyFile)
    if fileStatus(historyFile) != nil {
      history = try EpochReport.decodeHistory(Data(try readRegularFile(historyFile, maxBytes: EpochReport.maxHistoryBytes)), path: historyFile)
    }
  }

  /// The evaluator of this run's graph, normalisation and evaluation batch.
  public var evaluator: Evaluator {
    Evaluator(classes: classes, imageInputDims: imageInputDims, normalization: options.normalization, batch: options.evalBatch)
  }

  /// Accuracy, mean cross-entropy and predictions over a dataset (`Evaluator.evaluate`).
  public mutating func evaluate(_ data: ImageDataset) throws -> Evaluation {
    try evaluator.evaluate(&backend, data)
  }

  /// Trains; returns one report per epoch finished.
  public mutating func train(train fullTrain: ImageDataset, test: ImageDataset) throws -> [EpochReport] {
    let (train, validation, stepsPerEpoch) = try plan(fullTrain, test)
    try options.normalization.check(channels: train.channels)
    let b = options.batchSize
    var (images, labels) = ([Float](repeating: 0, count: b * train.imageBytes), [Int32](repeating: 0, count: b))
    var reports: [EpochReport] = []
    best = bestInHistory()
    var sinceBest = best.map { b in history.filter { $0.epoch > b.epoch }.count } ?? 0
    let firstEpoch = optimizer.step / stepsPerEpoch
    // Checkpoint sums that belong to another epoch (a run written before they were saved) start afresh.
    if partial.epoch != firstEpoch || optimizer.step % stepsPerEpoch == 0 { partial = EpochSums(epoch: firstEpoch) }
    var next: BatchQueue?  // the next epoch's, started while this one evaluates
    for epoch in firstEpoch..<options.epochs {
      let order = epochOrder(epoch, train.count)
      let start = Date()
      if partial.epoch != epoch { partial = EpochSums(epoch: epoch) }
      optimizer.learningRate = scheduledRate(epoch)
      let skip = optimizer.step - epoch * stepsPerEpoch
      let queue = next ?? batchQueue(train, order: order, steps: max(0, skip)..<stepsPerEpoch, firstStep: epoch * stepsPerEpoch + 1)
      var inputWait = 0.0
      for s in max(0, skip)..<stepsPerEpoch {
        if let m = options.maxSteps, optimizer.step >= m { break }
        if shouldStop() {
          interrupted = true
          try saveCheckpoint()
          return reports
        }
        let idx = order[(s * b)..<((s + 1) * b)]
        try batch(s, idx, of: train, from: queue, into: &images, waited: &inputWait)
        try step(idx, of: train, epoch: epoch, images: images, labels: &labels)
        let elapsed = Date().timeIntervalSince(start)
        let done = s + 1 - max(0, skip)
        onProgress(StepProgress(epoch: epoch + 1, step: s + 1, stepsInEpoch: stepsPerEpoch, runningLoss: partial.lossSum / Double(partial.seen / b),
                                imagesPerSecond: Double(done * b) / elapsed,
                                etaSeconds: elapsed / Double(done) * Double(stepsPerEpoch - s - 1)))
        if let every = options.saveEvery, optimizer.step % every == 0, s + 1 < stepsPerEpoch { try saveCheckpoint() }
      }
      // Throughput of the steps this process ran (a resumed epoch's earlier steps ran in another).
      let ranHere = (optimizer.step - max(skip, 0) - epoch * stepsPerEpoch) * b
      let finished = optimizer.step % stepsPerEpoch == 0
      next = finished && epoch + 1 < options.epochs
        ? batchQueue(train, order: epochOrder(epoch + 1, train.count), steps: 0..<stepsPerEpoch, firstStep: optimizer.step + 1) : nil
      var report = try epochReport(epoch, seconds: Date().timeIntervalSince(start), images: ranHere, validation: validation, test: test)
      report.stepsPerEpoch = stepsPerEpoch
      if queue != nil { report.inputWaitSeconds = inputWait }
      if options.schedule != .constant { report.learningRate = Double(optimizer.learningRate) }
      // Early stopping decides before the checkpoint, so the history records the best epoch and the stop.
      let stop = try watch(report, sinceBest: &sinceBest)
      report.bestEpoch = best?.epoch
      if stop { report.stoppedEarly = true }
      reports.append(report)
      history = history.filter { $0.epoch < report.epoch } + [report]
      if finished { partial = EpochSums(epoch: epoch + 1) }
      try saveCheckpoint()
      onEpoch(report)
      if stop { break }
      if !finished { break }  // stopped by maxSteps
    }
    return reports
  }

  /// The report of an epoch just trained: its sums, and the validation and test accuracy and loss (evaluated
  /// by the primary process only) after `images` images in `seconds`.
  mutating func epochReport(_ epoch: Int, seconds: Double, images: Int, validation: ImageDataset?, test: ImageDataset) throws -> EpochReport {
    var val: Evaluation?
    var tst: Evaluation?
    if options.primary {
      if let validation { val = try evaluate(validation) }
      tst = try evaluate(test)
    }
    let steps = partial.seen / options.batchSize
    let trainLoss = partial.lossSum / Double(max(1, steps)), trainAccuracy = Double(partial.correct) / Double(max(1, partial.seen))
    var r = EpochReport(epoch: epoch + 1, trainLoss: trainLoss, trainAccuracy: trainAccuracy, validationAccuracy: val?.accuracy,
                        testAccuracy: tst?.accuracy ?? 0, imagesPerSecond: Double(images) / max(seconds, 1e-9), seconds: seconds)
    r.validationLoss = val?.loss
    r.testLoss = tst?.loss
    r.steps = steps
    r.stepLosses = partial.stepLosses.map(Double.init)
    return r
  }

  /// Replaces the run's top-level weights.safetensors by best.safetensors (a new file: the checkpoint of the
  /// last step, which the top-level file linked to, stays intact for --resume). Returns the best epoch, or
  /// nil when there is none.
  public func restoreBest() throws -> Int? {
    guard options.primary, let b = best, fileStatus(bestPath) != nil else { return nil }
    try writeAtomically(try readRegularFile(bestPath, maxBytes: SafeTensors.maxFileBytes), to: weightsPath)
    return b.epoch
  }

  /// Early stopping after an epoch: a better monitored value saves best.safetensors; `patience` epochs
  /// without one stop the run (returns true).
  mutating func watch(_ report: EpochReport, sinceBest: inout Int) throws -> Bool {
    guard let v = monitored(report) else { return false }
    if improves(v, over: best) {
      best = (report.epoch, v)
      sinceBest = 0
      if options.primary {
        let meta = ["format": "pt", "cnnc.step": "\(optimizer.step)", "cnnc.epoch": "\(report.epoch)"].merging(options.inputMetadata) { $1 }
        try parameters.safeTensors(metadata: meta, stateKey: graph.stateKey).write(to: bestPath)
      }
      return false
    }
    sinceBest += 1
    guard let p = options.patience, sinceBest >= p else { return false }
    stoppedEarlyAfter = report.epoch
    return true
  }

  /// The schedule's rate for 0-based `epoch`, from the history of the epochs before it (the plateau schedule
  /// watches the validation loss, or the training loss without a validation split).
  func scheduledRate(_ epoch: Int) -> Float {
    let earlier = history.filter { $0.epoch <= epoch }.sorted { $0.epoch < $1.epoch }.map { $0.validationLoss ?? $0.trainLoss }
    return options.schedule.rate(base: baseLearningRate, epoch: epoch, epochs: options.epochs, earlierLosses: earlier)
  }

  /// The value early stopping watches in a report, if it has one.
  func monitored(_ r: EpochReport) -> Double? {
    switch options.monitor {
    case .valAccuracy: r.validationAccuracy
    case .valLoss: r.validationLoss
    }
  }

  /// Whether `v` beats `best` by more than `minDelta` (higher accuracy, lower loss).
  func improves(_ v: Double, over best: (epoch: Int, value: Double)?) -> Bool {
    guard let b = best else { return true }
    return options.monitor == .valAccuracy ? v > b.value + options.minDelta : v < b.value - options.minDelta
  }

  /// The best epoch of the restored history (resumed runs keep watching it).
  func bestInHistory() -> (epoch: Int, value: Double)? {
    var b: (epoch: Int, value: Double)?
    for r in history {
      if let v = monitored(r), improves(v, over: b) { b = (r.epoch, v) }
    }
    return b
  }

  /// The training and validation sets and the steps per epoch, after checking both data sets against the
  /// graph and the resumed checkpoint against this run's plan.
  func plan(_ fullTrain: ImageDataset, _ test: ImageDataset) throws -> (train: ImageDataset, validation: ImageDataset?, stepsPerEpoch: Int) {
    try fullTrain.validateLabels(classes: classes)
    try test.validateLabels(classes: classes)
    try fullTrain.validateImages(forInput: imageInputDims)
    try test.validateImages(forInput: imageInputDims)
    var train = fullTrain
    var validation: ImageDataset?
    if options.validationFraction > 0 {
      let held = options.validationCount(fullTrain.count)
      guard held > 0, held < fullTrain.count else { throw DataError("--val \(options.validationFraction) leaves no training or validation data") }
      (train, validation) = fullTrain.validationSplit(held: held, options.validationSplit, seed: options.seed)
    }
    let b = options.batchSize
    let stepsPerEpoch = train.count / b  // drop_last: static shapes
    guard stepsPerEpoch > 0 else { throw DataError("batch size \(b) exceeds the \(train.count) training examples") }
    // A resumed checkpoint must lie inside this run's plan; past its end there is nothing to train.
    let planned = min(options.epochs * stepsPerEpoch, options.maxSteps ?? Int.max)
    if optimizer.step > 0, optimizer.step >= planned {
      let plan = options.maxSteps.map { "--steps \($0)" } ?? "\(options.epochs) epoch\(options.epochs == 1 ? "" : "s") of \(stepsPerEpoch) steps"
      throw DataError("the checkpoint in \(options.outputDirectory) is at step \(optimizer.step), and this run (\(plan)) ends at step \(planned): nothing to resume; raise --epochs or --steps to train further")
    }
    return (train, validation, stepsPerEpoch)
  }

  /// One training step on the examples `idx`: runs the back end, stops on a non-finite loss (naming the op
  /// that produced it under --check-numerics), and adds the step to the epoch's sums.
  mutating func step(_ idx: ArraySlice<Int>, of train: ImageDataset, epoch: Int, images: [Float], labels: inout [Int32]) throws {
    let b = idx.count
    let before = checkNumerics ? parameters : nil
    for (j, i) in idx.enumerated() { labels[j] = Int32(train.labels[i]) }
    let r = try backend.trainStep(images: images, labels: labels, seed: options.seed, step: optimizer.step + 1,
                                  learningRate: optimizer.learningRate)
    guard r.loss.isFinite else {
      var message = "the loss became \(r.loss) at step \(optimizer.step + 1) (epoch \(epoch + 1)); stopping instead of training on garbage"
      if let before, let culprit = try? firstNonFinite(before, images: images, labels: labels, step: optimizer.step + 1) {
        message += "; the first non-finite value comes from \(culprit)"
      } else if !checkNumerics {
        message += " (run with --check-numerics to find the op that produced it)"
      }
      throw DataError(message)
    }
    optimizer.step += 1
    partial.lossSum += Double(r.loss)
    partial.stepLosses.append(r.loss)
    for j in 0..<b where argmax(r.logits[(j * classes)..<((j + 1) * classes)]) == Int(labels[j]) { partial.correct += 1 }
    partial.seen += b
  }
}

extension Trainer {
  /// The order of the training examples in `epoch`: a permutation that depends only on (seed, epoch), so a resumed
  /// run sees the same order.
  func epochOrder(_ epoch: Int, _ count: Int) -> [Int] {
    var rng = SeededRandom(seed: options.seed, stream: 0x5eed_0000 &+ UInt64(epoch))
    return rng.permutation(count)
  }

  /// For a streamed set, the queue that reads an epoch's batches a batch or two ahead, beside the step (`BatchQueue`):
  /// batch s of `order` for step `firstStep + s`. Held images are prepared by the step itself (nil).
  func batchQueue(_ train: ImageDataset, order: [Int], steps: Range<Int>, firstStep: Int) -> BatchQueue? {
    guard train.isStreamed else { return nil }
    let (options, b) = (self.options, self.options.batchSize)
    return BatchQueue(steps: steps) { s in
      var batch = [Float](repeating: 0, count: b * train.imageBytes)
      try Self.prepare(order[(s * b)..<((s + 1) * b)], of: train, options, step: firstStep + s, into: &batch)
      return batch
    }
  }

  /// The images of the epoch's step `s`, examples `idx`: taken from the queue (the time it took added to `waited`),
  /// or prepared here.
  func batch(_ s: Int, _ idx: ArraySlice<Int>, of train: ImageDataset, from queue: BatchQueue?, into images: inout [Float], waited: inout Double) throws {
    guard let queue else { return try Self.prepare(idx, of: train, options, step: optimizer.step + 1, into: &images) }
    let asked = Date()
    images = try queue.take(s)
    waited += Date().timeIntervalSince(asked)
  }

  /// The images of training step `step` (1-based), examples `idx`: normalised, and augmented by the draws of
  /// (seed, step, image) when the options augment.
  static func prepare(_ idx: ArraySlice<Int>, of train: ImageDataset, _ options: TrainingOptions, step: Int, into images: inout [Float]) throws {
    if options.augmentation.transforms.isEmpty {
      try train.normalizedBatch(idx, into: &images, options.normalization)
    } else {
      try train.augmentedBatch(idx, into: &images, options.normalization, options.augmentation, seed: options.seed, step: step)
    }
  }
}

/// Running sums of one epoch's steps, carried in checkpoints as metadata (exact decimal text). Timing is
/// not among them: checkpoints depend only on the seed and the arithmetic.
struct EpochSums: Equatable {
  var epoch = 0
  var lossSum = 0.0
  var correct = 0
  var seen = 0
  /// Each step's loss, in order (Float text round-trips exactly).
  var stepLosses: [Float] = []

  init(epoch: Int = 0) { self.epoch = epoch }

  init(metadata m: [String: String]) {
    epoch = m["cnnc.epoch"].flatMap(Int.init) ?? -1
    lossSum = m["cnnc.epoch_loss_sum"].flatMap(Double.init) ?? 0
    correct = m["cnnc.epoch_correct"].flatMap(Int.init) ?? 0
    seen = m["cnnc.epoch_seen"].flatMap(Int.init) ?? 0
    let losses = m["cnnc.epoch_step_losses"].map { $0.isEmpty ? [] : $0.split(separator: ",").map { Float($0) } } ?? []
    stepLosses = losses.compactMap { $0 }
    if !(lossSum.isFinite && correct >= 0 && seen >= correct && stepLosses.count == losses.count) { self = EpochSums(epoch: -1) }
  }

  var metadata: [String: String] {
    ["cnnc.epoch": "\(epoch)", "cnnc.epoch_loss_sum": "\(lossSum)", "cnnc.epoch_correct": "\(correct)",
     "cnnc.epoch_seen": "\(seen)", "cnnc.epoch_step_losses": stepLosses.map { "\($0)" }.joined(separator: ",")]
  }
}

extension Trainer {
  /// Replays a step in the reference interpreter and names the first node whose value is not finite.
  func firstNonFinite(_ params: Parameters, images: [Float], labels: [Int32], step: Int) throws -> String? {
    let t = try Pipeline(batch: labels.count, purpose: .training).run(graph, to: .grad)
    let (backward, table) = (t.graph, t.shapes)
    var inputs: [String: RefValue<Float>] = [:]
    for i in graph.inputs {
      inputs[i.name] = i.dtype == .f32 ? .f32(Tensor(shape: table[i.name]!.dims, data: images)) : .i32(shape: [labels.count], data: labels)
    }
    let tensors = params.tensors()
    if let bad = params.names.first(where: { params.values[$0]!.contains { !$0.isFinite } }) { return "parameter '\(bad)' (already not finite before the step)" }
    let env = try Interpreter<Float>(graph: backward, shapes: table)
      .run(inputs: inputs, parameters: tensors, context: ReferenceContext(training: true, seed: options.seed, step: UInt64(step)))
    for n in backward.nodes where env[n.name]?.tensor?.data.contains(where: { !$0.isFinite }) == true {
      let line = n.range.line > 0 ? ", line \(n.range.line)" : " (backward)"
      return "'\(n.name)' (\(n.op.spelling)\(line))"
    }
    return nil
  }
}

/// Index of the largest value (the first on ties).
/// -log softmax(logits)[label], computed stably in Double.
public func crossEntropy(_ logits: ArraySlice<Float>, label: Int) -> Double {
  let m = Double(logits.max() ?? 0)
  let sum = logits.reduce(0.0) { $0 + Foundation.exp(Double($1) - m) }
  return m + Foundation.log(sum) - Double(logits[logits.startIndex + label])
}

public func argmax(_ xs: ArraySlice<Float>) -> Int {
  var best = xs.startIndex
  for i in xs.indices where xs[i] > xs[best] { best = i }
  return best - xs.startIndex
}
