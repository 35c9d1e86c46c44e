import FileSystem
import ArgumentParser
import Foundation
import GraphIR
import LLVMBackend
import Passes
import Runtime

/// `cnnc eval`: test accuracy, confusion matrix and per-class precision/recall of trained weights.
struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Evaluate trained weights on the test set.")

  @Argument(help: "The .graph file or .onnx model.") var file: String
  @Option(parsing: .unconditional, help: "Weights in safetensors format (state_dict names); an .onnx model's own by default.") var weights: String?
  @OptionGroup var modelOptions: ModelFileOptions
  @OptionGroup(title: "Inputs") var inputOptions: InputOptions
  @Option(parsing: .unconditional, help: "Data directory: IDX, CIFAR-10 or CIFAR-100 binary files (see cnnc train --help).") var data: String?
  @Option(parsing: .unconditional, help: "Evaluation batch size (at most the test set; inference itself runs in chunks of 64).") var batch: Int = 1000
  @Option(parsing: .unconditional, help: "Back end: jit or interp.") var backend: BackendKind = .jit
  @Option(parsing: .unconditional, help: "The confusion matrix: auto (the matrix up to \(Eval.fullMatrixClasses) classes, else the \(Eval.fullMatrixClasses) most frequent confusions) or full.")
  var confusion: ConfusionOutput = .auto
  @OptionGroup(title: "Target") var targetOptions: TargetOptions

  /// How much of the confusion matrix is printed.
  enum ConfusionOutput: String, ExpressibleByArgument, CaseIterable { case auto, full }
  /// The most classes whose whole confusion matrix `auto` prints (a 1000-class one would be 2,000 lines).
  static let fullMatrixClasses = 20
  @OptionGroup var cacheOptions: CacheOptions

  func validate() throws {
    guard batch >= 1 else { throw ValidationError("--batch must be at least 1, got \(batch)") }
    try BackendKind.check(backend, allowed: [.jit, .interp])
  }

  func run() throws {
    let model = try TrainedModel(try GraphFile(path: file, verbose: modelOptions.verbose), weights: weights)
    try reportingErrors {
      let (normalization, transforms) = try inputOptions.resolve(model)
      let channels = model.graph.inputs.first { $0.dtype == .f32 }.flatMap { model.shapes[$0.name]?.dims[1] }
      let test = try ImageDataset.loadSet(directory: data ?? defaultDataDirectory(), training: false, transforms: transforms, channels: channels)
      // A batch beyond the test set would only allocate images that do not exist.
      let evaluator = try Evaluator(graph: model.graph, shapes: model.shapes, normalization: normalization, batch: max(1, min(batch, test.count)))
      try test.validateLabels(classes: evaluator.classes)
      var backend = try model.inferenceBackend(backend, inferenceCalls: TrainingOptions.evaluationCalls(test.count, batch: evaluator.batch),
                                               target: try targetOptions.resolve(runsHere: true), cache: cacheOptions.cache)
      let r = try evaluator.evaluate(&backend, test)
      if r.nonFinite > 0 {
        printError("warning: the network's output is not finite (NaN or infinity) for \(r.nonFinite) of \(test.count) images; their predictions mean nothing: the weights in \(model.weightsSource) are diverged or damaged\n")
      }
      let k = evaluator.classes
      let confusion = ConfusionMatrix(predictions: r.predictions, labels: test.labels, classes: k)
      print(String(format: "test accuracy: %.2f%% (%d of %d)", r.accuracy * 100, Int((r.accuracy * Double(test.count)).rounded()), test.count))
      if self.confusion == .full || k <= Self.fullMatrixClasses {
        print("\nconfusion matrix (rows: true label, columns: predicted)")
        print("      " + (0..<k).map { String(format: "%6d", $0) }.joined())
        for t in 0..<k { print(String(format: "%6d", t) + confusion.counts[t].map { String(format: "%6d", $0) }.joined()) }
        print("\nclass  precision  recall")
        for c in 0..<k { print(String(format: "%5d  %8.2f%%  %5.2f%%", c, confusion.precision(c) * 100, confusion.recall(c) * 100)) }
      } else {
        print("\nthe \(Self.fullMatrixClasses) most frequent confusions of \(k) classes (--confusion full prints the matrix)")
        print("label  predicted  images")
        for c in confusion.topConfusions(Self.fullMatrixClasses) { print(String(format: "%5d  %9d  %6d", c.label, c.predicted, c.count)) }
      }
    }
  }
}
