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
  @Option(parsing: .unconditional, help: "Data directory: IDX, CIFAR-10 or CIFAR-100 binary files (see cnnc train --help).") var data: String?
  @Option(parsing: .unconditional, help: "Evaluation batch size (at most the test set; inference itself runs in chunks of 64).") var batch: Int = 1000
  @Option(parsing: .unconditional, help: "Back end: jit or interp.") var backend: String = "jit"
  @OptionGroup(title: "Target") var targetOptions: TargetOptions
  @OptionGroup var cacheOptions: CacheOptions

  func validate() throws {
    guard batch >= 1 else { throw ValidationError("--batch must be at least 1, got \(batch)") }
    guard ["jit", "interp"].contains(backend) else { throw ValidationError("--backend must be jit or interp") }
  }

  func run() throws {
    let f = try GraphFile(path: file)
    let shapes = try f.run { () throws(DiagnosticList) in try inferShapes(f.graph, batch: 1) }
    try reportingErrors {
      let test = try ImageDataset.loadSet(directory: data ?? defaultDataDirectory(), training: false)
      // A batch beyond the test set would only allocate images that do not exist.
      let batch = max(1, min(self.batch, test.count))
      var params = Parameters(graph: f.graph, shapes: shapes, seed: 0)
      let (st, source) = try f.weights(weights)
      try params.load(st, path: source)
      var options = TrainingOptions(outputDirectory: ".")
      options.normalization = try Normalization(metadata: st.metadata) ?? .mnist
      options.evalBatch = batch
      options.batchSize = batch
      let opt = Optimizer(kind: .adam, learningRate: 0)
      let (acc, predictions, nonFinite, k): (Double, [Int], Int, Int)
      if backend == "jit" {
        let b = try CompiledBackend(name: "jit", graph: f.graph, batch: batch, optimizer: opt, compiler: try JITCompiler(target: try targetOptions.resolve(runsHere: true), cache: cacheOptions.cache),
                                    inferenceCalls: options.evaluationCalls(test.count), inferenceOnly: true)
        var trainer = try Trainer(backend: b, graph: f.graph, parameters: params, optimizer: opt, options: options)
        try test.validateLabels(classes: trainer.classes)
        (acc, predictions, nonFinite) = try trainer.accuracy(test)
        k = trainer.classes
      } else {
        var trainer = try Trainer(backend: try InterpreterBackend(graph: f.graph), graph: f.graph, parameters: params, optimizer: opt, options: options)
        try test.validateLabels(classes: trainer.classes)
        (acc, predictions, nonFinite) = try trainer.accuracy(test)
        k = trainer.classes
      }
      var confusion = [[Int]](repeating: [Int](repeating: 0, count: k), count: k)
      for (p, l) in zip(predictions, test.labels) { confusion[Int(l)][p] += 1 }
      if nonFinite > 0 {
        printError("warning: the network's output is not finite (NaN or infinity) for \(nonFinite) of \(test.count) images; their predictions mean nothing: the weights in \(source) are diverged or damaged\n")
      }
      print(String(format: "test accuracy: %.2f%% (%d of %d)", acc * 100, Int((acc * Double(test.count)).rounded()), test.count))
      print("\nconfusion matrix (rows: true label, columns: predicted)")
      print("      " + (0..<k).map { String(format: "%6d", $0) }.joined())
      for t in 0..<k { print(String(format: "%6d", t) + confusion[t].map { String(format: "%6d", $0) }.joined()) }
      print("\nclass  precision  recall")
      for c in 0..<k {
        let tp = Double(confusion[c][c])
        let predicted = Double((0..<k).reduce(0) { $0 + confusion[$1][c] })
        let actual = Double(confusion[c].reduce(0, +))
        print(String(format: "%5d  %8.2f%%  %5.2f%%", c, predicted > 0 ? tp / predicted * 100 : 0, actual > 0 ? tp / actual * 100 : 0))
      }
    }
  }
}
