import FileSystem
import ArgumentParser
import Foundation
import GraphIR
import LLVMBackend
import Lowering
import Passes
import Runtime

/// `cnnc report`: one self-contained HTML page for a training run.
struct ReportCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "report",
    abstract: "Write RUN_DIR/report.html: loss and accuracy curves, confusion matrix, misclassified digits, first-layer filters and feature maps.")

  @Argument(help: "A run directory written by cnnc train (history.json, weights.safetensors, model.graph).") var directory: String
  @Option(parsing: .unconditional, help: "Data directory: IDX, CIFAR-10 or CIFAR-100 binary files (see cnnc train --help).") var data: String?

  func run() throws {
    try reportingErrors {
      let path = try writeReport(runDirectory: directory, data: data ?? defaultDataDirectory())
      print("wrote \(path)")
    }
  }
}

/// Builds the report of a run directory; returns the path of the HTML file.
func writeReport(runDirectory dir: String, data: String) throws -> String {
  // A run without a history yet (killed before its first checkpoint) has no curves; a damaged one is an error.
  let historyPath = Path.join(dir, RunDirectory.historyFile)
  let history = fileStatus(historyPath) == nil ? []
    : try EpochReport.decodeHistory(Data(try readRegularFile(historyPath, maxBytes: EpochReport.maxHistoryBytes)), path: historyPath)
  let model = try TrainedModel(try GraphFile(path: Path.join(dir, "model.graph")), weights: Path.join(dir, RunDirectory.weightsFile))
  let (f, params) = (model.file, model.parameters)
  let imageInput = f.graph.inputs.first { $0.dtype == .f32 }.flatMap { model.shapes[$0.name] }
  let test = try ImageDataset.loadSet(directory: data, training: false, transforms: model.recordedTransforms, channels: imageInput?.dims[1])
  // Small batches keep the inference arena (and so peak memory) small; the test set takes a moment either way.
  let evaluator = try Evaluator(graph: f.graph, shapes: model.shapes, normalization: model.normalization, batch: 100)
  try test.validateLabels(classes: evaluator.classes)
  var backend = try model.inferenceBackend(.jit, inferenceCalls: TrainingOptions.evaluationCalls(test.count, batch: evaluator.batch),
                                           target: Target.host(), cache: nil)
  let predictions = try evaluator.evaluate(&backend, test).predictions
  let confusion = ConfusionMatrix(predictions: predictions, labels: test.labels, classes: evaluator.classes).counts
  let px = test.imageBytes
  var mistakes: [(pixels: [UInt8], label: Int, predicted: Int)] = []
  var rng = SeededRandom(seed: 0)
  for i in predictions.indices where predictions[i] != Int(test.labels[i]) && mistakes.count < 40 {
    mistakes.append((pixels: try test.pixels(i, &rng), label: Int(test.labels[i]), predicted: predictions[i]))
  }
  // First conv layer: its filters (every input plane of an RGB input, for colour; else the first); the first
  // two conv layers: their outputs for the first test image.
  let convs = f.graph.nodes.filter { if case .conv2d = $0.op { true } else { false } }.prefix(reportedConvLayers)
  var filters: [[Float]] = [], kernel = 1
  if let conv = convs.first, case .conv2d(let a) = conv.op {
    kernel = a.kernel
    let w = params.values["\(conv.name).weight"]!, cin = params.shapes["\(conv.name).weight"]![1]
    let drawn = (cin == 3 && test.channels == 3 ? 3 : 1) * a.kernel * a.kernel
    filters = (0..<a.filters).map { o in Array(w[(o * cin * a.kernel * a.kernel)..<(o * cin * a.kernel * a.kernel + drawn)]) }
  }
  var x = [Float](repeating: 0, count: px)
  try test.normalizedBatch([0][...], into: &x, model.normalization)
  let maps = try featureMaps(f.graph, Array(convs), params, image: x)
  let report = ReportData(title: "cnnc report: \(f.graph.name)", history: history, confusion: confusion, mistakes: mistakes,
                          rows: test.rows, cols: test.cols, channels: test.channels, filters: filters, kernel: kernel, digit: try test.pixels(0, &rng),
                          featureMaps: maps)
  let out = Path.join(dir, "report.html")
  try writeAtomically(Array(Report.html(report).utf8), to: out)
  return out
}

/// How many conv layers the report shows feature maps of (the first ones).
let reportedConvLayers = 2

/// The outputs (after relu) of `convs` for one normalised image, by the reference interpreter running the
/// graph up to the last of them.
func featureMaps(_ graph: Graph, _ convs: [Node], _ params: Parameters, image x: [Float]) throws -> [FeatureMaps] {
  guard let last = convs.last else { return [] }
  let one = try inferShapes(graph, batch: 1)
  var g = graph
  g.nodes = Array(g.nodes.prefix { $0.name != last.name }) + [last]
  g.output = last.name
  g.minimize = nil
  let image = graph.inputs.first { $0.dtype == .f32 }!
  var inputs: [String: RefValue<Float>] = [image.name: .f32(Tensor(shape: one[image.name]!.dims, data: x))]
  for i in graph.inputs where i.dtype == .i32 { inputs[i.name] = .i32(shape: one[i.name]!.dims, data: [Int32](repeating: 0, count: one[i.name]!.count)) }
  let env = try Interpreter<Float>(graph: g, shapes: one).run(inputs: inputs, parameters: params.tensors(), context: ReferenceContext(training: false))
  return convs.map { conv in
    let y = env[conv.name]!.tensor!
    let (h, w) = (y.shape[2], y.shape[3])
    return FeatureMaps(layer: conv.name, maps: (0..<y.shape[1]).map { c in y.data[(c * h * w)..<((c + 1) * h * w)].map { max(0, $0) } }, height: h, width: w)
  }
}
