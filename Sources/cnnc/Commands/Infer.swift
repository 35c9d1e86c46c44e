import ArgumentParser
import FileSystem
import GraphIR
import Runtime

/// `cnnc infer`: a model's output for a NumPy array of images, as ONNX Runtime's `session.run` gives it.
struct Infer: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a model on a .npy array of images (float32 NCHW, any batch) and write its outputs (logits) as .npy.",
    discussion: "No normalisation is applied: the array is the model's input as it is, as an ONNX runtime takes it.")

  @Argument(help: "The .graph file (with --weights) or .onnx model.") var file: String
  @Option(parsing: .unconditional, help: "Weights in safetensors format; an .onnx model's own by default.") var weights: String?
  @OptionGroup var modelOptions: ModelFileOptions
  @Option(parsing: .unconditional, help: "The input: a float32 array [N, C, H, W] of the model's image size.") var input: String
  @Option(name: .shortAndLong, parsing: .unconditional, help: "The .npy file to write: the outputs, [N, ...].") var output: String
  @Option(parsing: .unconditional, help: "Images per call (1 to \(Infer.maxBatch)).") var batch: Int = 64
  @Option(parsing: .unconditional, help: "Back end: jit (compiled first) or interp (the reference interpreter).") var backend: BackendKind = .jit
  @OptionGroup(title: "Target") var targetOptions: TargetOptions
  @OptionGroup var cacheOptions: CacheOptions

  /// The most images one call may take (a compiled program's arena grows with it).
  static let maxBatch = 1024

  func validate() throws {
    guard (1...Self.maxBatch).contains(batch) else { throw ValidationError("--batch must be from 1 to \(Self.maxBatch), got \(batch)") }
    try BackendKind.check(backend, allowed: [.jit, .interp])
  }

  func run() throws {
    let model = try TrainedModel(try GraphFile(path: file, verbose: modelOptions.verbose), weights: weights)
    try reportingErrors {
      try checkOutputFile(output)
      let x = try NPYArray.read(input)
      guard let image = model.graph.inputs.first(where: { $0.dtype == .f32 }), let dims = model.shapes[image.name]?.dims,
            let out = model.graph.output, let outDims = model.shapes[out]?.dims else {
        throw DataError("\(file): the graph has no f32 image input or no output")
      }
      let want = Array(dims.dropFirst())
      guard x.shape.count == dims.count, Array(x.shape.dropFirst()) == want else {
        throw DataError("\(input) is an array of shape \(x.shape); the model takes [N, \(want.map(String.init).joined(separator: ", "))]")
      }
      let n = x.shape[0], per = want.reduce(1, *), outPer = outDims.dropFirst().reduce(1, *)
      guard n >= 1 else { throw DataError("\(input) holds no images (its first dimension is 0)") }
      let calls = TrainingOptions.evaluationCalls(n, batch: min(batch, n))
      var b = try model.inferenceBackend(backend, inferenceCalls: calls, target: try targetOptions.resolve(runsHere: true), cache: cacheOptions.cache)
      var y: [Float] = []
      y.reserveCapacity(n * outPer)
      var start = 0
      while start < n {
        let count = min(batch, n - start)
        y += try b.infer(images: Array(x.values[(start * per)..<((start + count) * per)]), count: count)
        start += count
      }
      try writeAtomically(NPYArray(shape: [n] + Array(outDims.dropFirst()), values: y).serialized(), to: output)
      print("wrote \(output): [\(([n] + outDims.dropFirst()).map(String.init).joined(separator: ", "))] float32")
    }
  }
}
