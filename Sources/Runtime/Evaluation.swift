import GraphIR
import Passes

/// Evaluates a classifier on a data set with any back end that infers: the graph's classes and image size, the
/// normalisation its weights were trained with, and the images per `infer` call.
public struct Evaluator: Sendable {
  public let classes: Int
  /// The image input's dimensions ([N, C, H, W]; N as inferred).
  public let imageInputDims: [Int]
  public var normalization: Normalization
  public var batch: Int

  /// `shapes` are the graph's, at any batch.
  public init(graph: Graph, shapes: ShapeTable, normalization: Normalization, batch: Int) throws {
    guard let output = graph.output, let out = shapes[output], out.dims.count == 2 else {
      throw DataError("the graph's output must be [N, classes] logits to train or evaluate a classifier")
    }
    guard let image = graph.inputs.first(where: { $0.dtype == .f32 }) else { throw DataError("the graph has no f32 image input") }
    self.init(classes: out.dims[1], imageInputDims: shapes[image.name]!.dims, normalization: normalization, batch: batch)
  }

  public init(classes: Int, imageInputDims: [Int], normalization: Normalization, batch: Int) {
    self.classes = classes
    self.imageInputDims = imageInputDims
    self.normalization = normalization
    self.batch = max(1, batch)
  }

  /// Accuracy and mean cross-entropy (softmax of the output against the labels, in Double) over `data`, in
  /// calls of `batch` images; images, labels and normalisation are checked against the graph first.
  public func evaluate<B: InferenceBackend>(_ backend: inout B, _ data: ImageDataset) throws -> Evaluation {
    try data.validateImages(forInput: imageInputDims)
    try data.validateLabels(classes: classes)
    try normalization.check(channels: data.channels)
    var predictions: [Int] = []
    predictions.reserveCapacity(data.count)
    var start = 0
    let queue = photoQueue(data)
    var buffer: [Float] = []
    var lossSum = 0.0, nonFinite = 0
    while start < data.count {
      let n = min(batch, data.count - start)
      buffer = try queue?.take(start / batch) ?? Self.batch(data, start..<(start + n), normalization)
      let logits = try backend.infer(images: buffer, count: n)
      for i in 0..<n {
        let row = logits[(i * classes)..<((i + 1) * classes)]
        predictions.append(argmax(row))
        if !row.allSatisfy(\.isFinite) { nonFinite += 1 }
        lossSum += crossEntropy(row, label: Int(data.labels[start + i]))
      }
      start += n
    }
    let correct = zip(predictions, data.labels).filter { $0 == Int($1) }.count
    return Evaluation(accuracy: Double(correct) / Double(max(1, data.count)), loss: lossSum / Double(max(1, data.count)),
                      predictions: predictions, nonFinite: nonFinite)
  }
}

extension Evaluator {
  /// The normalised images of examples `range`.
  static func batch(_ data: ImageDataset, _ range: Range<Int>, _ normalization: Normalization) throws -> [Float] {
    var out = [Float](repeating: 0, count: range.count * data.imageBytes)
    try data.normalizedBatch(Array(range)[...], into: &out, normalization)
    return out
  }

  /// For a streamed set, its calls' batches read a call or two ahead of the one inferring (`BatchQueue`).
  func photoQueue(_ data: ImageDataset) -> BatchQueue? {
    guard data.isStreamed else { return nil }
    let (batch, normalization) = (self.batch, self.normalization)
    return BatchQueue(steps: 0..<((data.count + batch - 1) / batch)) { call in
      try Self.batch(data, (call * batch)..<min(data.count, (call + 1) * batch), normalization)
    }
  }
}

/// One evaluation's figures. `nonFinite` counts the images whose output holds a NaN or an infinity (their
/// predictions mean nothing).
public struct Evaluation: Sendable {
  public var accuracy: Double
  public var loss: Double
  public var predictions: [Int]
  public var nonFinite: Int
}

/// Counts of (true label, predicted class) pairs, and each class's precision and recall.
public struct ConfusionMatrix: Sendable, Equatable {
  /// `counts[label][predicted]`.
  public let counts: [[Int]]

  public init(predictions: [Int], labels: [UInt8], classes: Int) {
    var counts = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
    for (p, l) in zip(predictions, labels) where Int(l) < classes && p < classes { counts[Int(l)][p] += 1 }
    self.counts = counts
  }

  /// The `n` largest off-diagonal counts (images of `label` predicted as `predicted`), largest first, ties by
  /// label then prediction; zero counts are left out.
  public func topConfusions(_ n: Int) -> [(label: Int, predicted: Int, count: Int)] {
    var all: [(label: Int, predicted: Int, count: Int)] = []
    for (l, row) in counts.enumerated() { for (p, c) in row.enumerated() where p != l && c > 0 { all.append((l, p, c)) } }
    return Array(all.sorted { ($1.count, $0.label, $0.predicted) < ($0.count, $1.label, $1.predicted) }.prefix(n))
  }

  /// Of the images predicted as `c`, the fraction that are `c` (0 when none is).
  public func precision(_ c: Int) -> Double {
    let predicted = counts.reduce(0) { $0 + $1[c] }
    return predicted > 0 ? Double(counts[c][c]) / Double(predicted) : 0
  }

  /// Of the images of class `c`, the fraction predicted as `c` (0 when there are none).
  public func recall(_ c: Int) -> Double {
    let actual = counts[c].reduce(0, +)
    return actual > 0 ? Double(counts[c][c]) / Double(actual) : 0
  }
}
