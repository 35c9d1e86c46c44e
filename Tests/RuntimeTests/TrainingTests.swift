import CNNCTestSupport
import Foundation
import GraphIR
import Passes
import Runtime
import Testing

/// The tiny graph learns real MNIST with the reference interpreter, reproducibly, and resumes exactly.
@Suite(.serialized) struct TrainingTests {
  static let data = Fixtures.root.appendingPathComponent("data/mnist").path

  static func trainer(steps: Int, dir: String, seed: UInt64 = 5) throws -> Trainer<InterpreterBackend> {
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent("tiny.graph"))
    let params = Parameters(graph: g, shapes: try inferShapes(g, batch: 32), seed: seed)
    var o = TrainingOptions(outputDirectory: dir)
    o.batchSize = 32
    o.maxSteps = steps
    o.seed = seed
    return try Trainer(backend: try InterpreterBackend(graph: g), graph: g, parameters: params,
                       optimizer: Optimizer(kind: .adam, learningRate: 3e-3), options: o)
  }

  static func dir() -> String { NSTemporaryDirectory() + "cnnc-train-\(UUID().uuidString)" }

  @Test func tinyGraphLossFallsAndItLearns() throws {
    let train = try ImageDataset.load(directory: Self.data, split: "train")
    let test = try ImageDataset.load(directory: Self.data, split: "t10k")
    var t = try Self.trainer(steps: 300, dir: Self.dir())
    var losses: [Double] = []
    t.onProgress = { losses.append($0.runningLoss * Double($0.step) - (losses.isEmpty ? 0 : losses.reduce(0, +))) }
    let reports = try t.train(train: train, test: test)
    #expect(losses.count == 300)
    let first = losses.prefix(20).reduce(0, +) / 20, last = losses.suffix(20).reduce(0, +) / 20
    #expect(first > 1.5, "starts near ln(10)")
    #expect(last < first * 0.5, "loss falls: \(first) -> \(last)")
    #expect(reports.last!.testAccuracy > 0.8)
  }

  @Test func sameSeedGivesByteIdenticalCheckpoints() throws {
    let train = try ImageDataset.load(directory: Self.data, split: "train")
    let test = ImageDataset(images: Array(train.images.prefix(784 * 10)), labels: Array(train.labels.prefix(10)), count: 10, rows: 28, cols: 28)
    var weights: [Data] = [], states: [Data] = []
    for _ in 0..<2 {
      var t = try Self.trainer(steps: 40, dir: Self.dir())
      _ = try t.train(train: train, test: test)
      weights.append(try Data(contentsOf: URL(fileURLWithPath: t.weightsPath)))
      states.append(try Data(contentsOf: URL(fileURLWithPath: t.run.file(RunDirectory.optimizerFile))))
    }
    #expect(weights[0] == weights[1])
    #expect(states[0] == states[1])
    // Another seed gives other weights in a file of the same layout (so the comparison above could fail).
    var other = try Self.trainer(steps: 40, dir: Self.dir(), seed: 6)
    _ = try other.train(train: train, test: test)
    let otherWeights = try Data(contentsOf: URL(fileURLWithPath: other.weightsPath))
    #expect(otherWeights.count == weights[0].count)
    #expect(otherWeights != weights[0])
  }

  /// The normalisation a run trains with is saved in its checkpoint, read back on resume, and applied to every batch.
  /// Augmented runs are as reproducible as plain ones, and the augmentation does change what is learnt.
  @Test func augmentedRunsAreByteIdentical() throws {
    let train = try ImageDataset.load(directory: Self.data, split: "train")
    let test = ImageDataset(images: Array(train.images.prefix(784 * 10)), labels: Array(train.labels.prefix(10)), count: 10, rows: 28, cols: 28)
    var weights: [Data] = []
    for spec in ["shift:2,rotate:10", "shift:2,rotate:10", ""] {
      var t = try Self.trainer(steps: 10, dir: Self.dir())
      t.options.augmentation = spec.isEmpty ? .none : try Augmentation(parsing: spec)
      _ = try t.train(train: train, test: test)
      weights.append(try Data(contentsOf: URL(fileURLWithPath: t.weightsPath)))
    }
    #expect(weights[0] == weights[1])
    #expect(weights[0] != weights[2])
  }

  @Test func normalizationIsSavedAndApplied() throws {
    let train = try ImageDataset.load(directory: Self.data, split: "train")
    let test = ImageDataset(images: Array(train.images.prefix(784 * 10)), labels: Array(train.labels.prefix(10)), count: 10, rows: 28, cols: 28)
    let measured = try train.measuredNormalization()
    // MNIST's published constants are its training set's statistics.
    #expect(measured.mean.count == 1 && abs(measured.mean[0] - 0.1307) < 1e-3 && abs(measured.std[0] - 0.3081) < 1e-3, "\(measured)")
    var runs: [Data] = []
    for n in [Normalization.mnist, Normalization(mean: 0.5, std: 0.25)] {
      var t = try Self.trainer(steps: 5, dir: Self.dir())
      t.options.normalization = n
      _ = try t.train(train: train, test: test)
      let st = try SafeTensors.read(from: t.weightsPath)
      #expect(try Normalization(metadata: st.metadata) == n)
      runs.append(try Data(contentsOf: URL(fileURLWithPath: t.weightsPath)))
    }
    // The other normalisation changes the inputs, so the weights differ.
    #expect(runs[0] != runs[1])
    #expect(throws: CheckpointError.self) { _ = try Normalization(metadata: ["cnnc.normalize.mean": "0.5", "cnnc.normalize.std": "-1"]) }
    #expect(try Normalization(metadata: [:]) == nil)
    var x = [Float](repeating: 0, count: 784)
    try test.normalizedBatch([0][...], into: &x, Normalization(mean: 0.5, std: 0.25))
    #expect(x[0] == (Float(test.images[0]) / 255 - 0.5) / 0.25)
  }

  @Test func resumeContinuesExactly() throws {
    let train = try ImageDataset.load(directory: Self.data, split: "train")
    let test = ImageDataset(images: Array(train.images.prefix(784 * 10)), labels: Array(train.labels.prefix(10)), count: 10, rows: 28, cols: 28)
    var straight = try Self.trainer(steps: 30, dir: Self.dir())
    _ = try straight.train(train: train, test: test)

    let d = Self.dir()
    var first = try Self.trainer(steps: 17, dir: d)
    _ = try first.train(train: train, test: test)
    var second = try Self.trainer(steps: 30, dir: d)
    try second.resume(from: d)
    #expect(second.optimizer.step == 17)
    _ = try second.train(train: train, test: test)
    #expect(second.parameters == straight.parameters)
    #expect(second.optimizerWithState == straight.optimizerWithState)
  }

  /// RGB images are drawn in colour (planar bytes to one rgb() per pixel) and RGB filters as colour patches;
  /// grey images stay grey.
  @Test func reportDrawsColourImagesInColour() {
    let rgb: [UInt8] = [255, 0, 0, 255, 0, 128, 0, 0, 0, 0, 0, 64]  // 2x2: red, green-ish, blue planes
    let filter: [Float] = [1, -1, 0, 0, 0, 0, 0, 0, -1, 1, 0, 0]
    let page = Report.html(ReportData(title: "t", history: [], confusion: [[1]], mistakes: [(rgb, 0, 1)], rows: 2, cols: 2, channels: 3,
                                      filters: [filter], kernel: 2, digit: rgb, featureMaps: []))
    #expect(page.contains("fill=\"rgb(255,0,0)\"") && page.contains("fill=\"rgb(0,128,0)\"") && page.contains("fill=\"rgb(255,0,64)\""))
    #expect(page.contains("fill=\"rgb(255,128,0)\""), "a filter's planes drawn as one colour patch around grey")
    let grey = Report.html(ReportData(title: "t", history: [], confusion: [[1]], mistakes: [([255, 0, 0, 255], 0, 1)], rows: 2, cols: 2,
                                      filters: [], kernel: 1, digit: [0, 0, 0, 0], featureMaps: []))
    #expect(grey.contains("rgb(255,255,255)") && grey.contains("Misclassified test images"))
  }

  /// The report's charts: every series the history has (validation and test loss too), a loss axis from zero,
  /// a best-epoch marker, and "1 epoch" in the singular.
  @Test func reportChartsEverySeries() {
    func epoch(_ e: Int, val: Double?) -> EpochReport {
      var r = EpochReport(epoch: e, trainLoss: 1 / Double(e), trainAccuracy: 0.8, validationAccuracy: val, testAccuracy: 0.85,
                          imagesPerSecond: 1000, seconds: 1)
      r.validationLoss = val.map { 1 - $0 }
      r.testLoss = 0.3
      r.stepLosses = [2.3, 1.0, 0.5]
      return r
    }
    func page(_ h: [EpochReport]) -> String {
      Report.html(ReportData(title: "t", history: h, confusion: [[1]], mistakes: [], rows: 1, cols: 1, filters: [], kernel: 1, digit: [0],
                             featureMaps: [FeatureMaps(layer: "conv2", maps: [[0, 1, 0, 1]], height: 2, width: 2)]))
    }
    var three = [epoch(1, val: 0.90), epoch(2, val: 0.95), epoch(3, val: 0.93)]
    let plain = page(three)
    #expect(plain.contains("3 epochs;") && plain.contains("— validation") && plain.contains("— test") && plain.contains(">best</text>"))
    #expect(plain.contains(">0.000</text>"), "the loss axis starts at zero")
    #expect(plain.contains("Training loss per step") && plain.contains("Feature maps of conv2") && !plain.contains("Stopped early"))
    three[2].bestEpoch = 2
    three[2].stoppedEarly = true
    #expect(page(three).contains("Stopped early</b> after epoch 3") && page(three).contains("Best epoch: 2"))
    let one = page([epoch(1, val: nil)])
    #expect(one.contains("1 epoch;") && !one.contains("— validation") && !one.contains(">best</text>"))
    // TensorBoard's debiased moving average: the first value is the first loss, then 0.9 of the running value.
    let s = Report.smoothed([2, 1])
    #expect(abs(s[0] - 2) < 1e-12 && abs(s[1] - (0.9 * 0.2 + 0.1) / 0.19) < 1e-12)
  }

  /// --val holds out a seeded random choice by default (the same for the same seed, disjoint from the rest),
  /// or the last examples.
  @Test func validationSplitIsSeededOrLast() throws {
    let labels = (0..<100).map { UInt8($0 % 10) }
    let images = (0..<100).flatMap { [UInt8](repeating: UInt8($0), count: 4) }
    let data = ImageDataset(images: images, labels: labels, count: 100, rows: 2, cols: 2)
    func ids(_ d: ImageDataset) -> [Int] { (0..<d.count).map { Int(d.images[$0 * 4]) } }
    let (a, b) = data.validationSplit(held: 20, .random, seed: 3)
    let (_, again) = data.validationSplit(held: 20, .random, seed: 3)
    let (_, other) = data.validationSplit(held: 20, .random, seed: 4)
    #expect(b.count == 20 && a.count == 80 && Set(ids(a)).isDisjoint(with: ids(b)) && Set(ids(a) + ids(b)).count == 100)
    #expect(ids(b) == ids(again) && ids(b) != ids(other) && ids(b) != Array(80..<100))
    #expect(ids(b) == ids(b).sorted(), "held-out examples keep their order")
    #expect(b.labels == ids(b).map { UInt8($0 % 10) })
    #expect(ids(data.validationSplit(held: 20, .last, seed: 3).1) == Array(80..<100))
  }

  @Test func scheduleRatesFollowPyTorch() throws {
    let base: Float = 0.1
    #expect((0..<5).map { LRSchedule.step(every: 2, gamma: 0.5).rate(base: base, epoch: $0, epochs: 5, earlierLosses: []) } == [0.1, 0.1, 0.05, 0.05, 0.025])
    let cosine = (0...4).map { LRSchedule.cosine.rate(base: base, epoch: $0, epochs: 4, earlierLosses: []) }
    #expect(cosine[0] == base && abs(cosine[2] - 0.05) < 1e-7 && abs(cosine[4]) < 1e-7)
    // ReduceLROnPlateau(patience 1, factor 0.1): 0.95 and 0.96 are two bad epochs after 0.9 (more than the
    // patience), so the rate drops after the fourth epoch, and the bad count starts again.
    let losses = [1.0, 0.9, 0.95, 0.96, 0.97]
    let plateau = (0...5).map { LRSchedule.plateau(patience: 1, factor: 0.1).rate(base: 1, epoch: $0, epochs: 6, earlierLosses: losses) }
    #expect(plateau == [1, 1, 1, 1, Float(0.1), Float(0.1)])
    #expect(try LRSchedule(parsing: "plateau:2:0.5") == .plateau(patience: 2, factor: 0.5))
    for bad in ["step", "step:0:0.5", "step:2:1.5", "plateau:1:1", "cosine:3", "linear"] {
      #expect(throws: DataError.self, "\(bad)") { _ = try LRSchedule(parsing: bad) }
    }
  }

  /// A scheduled run interrupted mid-epoch and resumed ends with the weights, state and rates of a straight
  /// run; a resume with another schedule is refused.
  @Test func scheduledRunResumesExactly() throws {
    let full = try ImageDataset.load(directory: Self.data, split: "train")
    let train = ImageDataset(images: Array(full.images.prefix(784 * 160)), labels: Array(full.labels.prefix(160)), count: 160, rows: 28, cols: 28)
    let test = ImageDataset(images: Array(full.images.suffix(784 * 10)), labels: Array(full.labels.suffix(10)), count: 10, rows: 28, cols: 28)
    func scheduled(_ dir: String, _ schedule: LRSchedule) throws -> Trainer<InterpreterBackend> {
      var t = try Self.trainer(steps: 1_000, dir: dir)
      t.options.epochs = 4
      t.options.validationFraction = 0.2
      t.options.schedule = schedule
      return t
    }
    for schedule in [LRSchedule.plateau(patience: 0, factor: 0.5), .step(every: 1, gamma: 0.5)] {
      var straight = try scheduled(Self.dir(), schedule)
      let reports = try straight.train(train: train, test: test)
      #expect(reports.count == 4)
      if case .step = schedule { #expect(reports.compactMap(\.learningRate) == [1, 0.5, 0.25, 0.125].map { Double(Float(3e-3 * $0)) }) }
      let d = Self.dir()
      var first = try scheduled(d, schedule)
      var calls = 0
      first.shouldStop = { calls += 1; return calls > 10 }  // 4 steps an epoch: stops inside epoch 3
      _ = try first.train(train: train, test: test)
      #expect(first.interrupted)
      var second = try scheduled(d, schedule)
      try second.resume(from: d)
      let rest = try second.train(train: train, test: test)
      #expect(second.parameters == straight.parameters, "\(schedule)")
      #expect(second.optimizerWithState == straight.optimizerWithState, "\(schedule)")
      #expect(rest.map(\.learningRate) == reports.suffix(rest.count).map(\.learningRate), "\(schedule)")
      var other = try scheduled(d, .cosine)
      #expect(throws: CheckpointError.self) { try other.resume(from: d) }
    }
  }
}
