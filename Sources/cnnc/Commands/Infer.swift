import ArgumentParser
import FileSystem
import Foundation
import GraphIR
import Runtime

/// `cnnc infer`: a model's output for a NumPy array of images, as ONNX Runtime's `session.run` gives it.
struct Infer: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a model on a .npy array of images (float32 NCHW, any batch), or on PNG and JPEG photos, and write its outputs (logits) as .npy.",
    discussion: "No normalisation is applied: the array is the model's input as it is, as an ONNX runtime takes it.")

  @Argument(help: "The .graph file (with --weights) or .onnx model.") var file: String
  @Option(parsing: .unconditional, help: "Weights in safetensors format; an .onnx model's own by default.") var weights: String?
  @OptionGroup var modelOptions: ModelFileOptions
  @Option(parsing: .unconditional, help: "The input: a float32 array [N, C, H, W] of the model's image size (.npy, used as it is), or a PNG or JPEG, or a directory of them (transformed and normalised as --transform and --normalize say, else as the checkpoint records).")
  var input: String
  @OptionGroup(title: "Inputs (photos only)") var inputOptions: InputOptions
  @Option(name: .shortAndLong, parsing: .unconditional, help: "The .npy file to write: the outputs, [N, ...].") var output: String
  @Option(parsing: .unconditional, help: "Images per call (1 to \(Infer.maxBatch)).") var batch: Int = 64
  @Option(parsing: .unconditional, help: "Back end: jit (compiled first) or interp (the reference interpreter).") var backend: BackendKind = .jit
  @OptionGroup(title: "Target") var targetOptions: TargetOptions
  @OptionGroup var cacheOptions: CacheOptions

  /// The input as the model's array: the `.npy` file as it is, or the photos it names, each transformed, made the
  /// model's channels and normalised (their order, a line each, on standard output).
  func array(_ model: TrainedModel, dims: [Int]) throws -> NPYArray {
    guard let names = try ImageFile.paths(named: input) else {
      guard inputOptions.transform == nil, inputOptions.normalize == nil, inputOptions.mean == nil else {
        throw DataError("--transform, --normalize, --mean and --std prepare photos; \(input) is an array, used as it is")
      }
      return try NPYArray.read(input)
    }
    guard dims.count == 4, dims[1] == 1 || dims[1] == 3 else {
      throw DataError("the graph's image input must be [N, 1, H, W] or [N, 3, H, W] to take photos")
    }
    let (normalization, transforms) = try inputOptions.resolve(model)
    try normalization.check(channels: dims[1])
    var pixels: [UInt8] = []
    for (k, path) in names.enumerated() {
      pixels += try ImageFile.read(path, transforms: transforms, channels: dims[1], height: dims[2], width: dims[3]).pixels
      print("image \(k): \(path)")
    }
    let set = ImageDataset(images: pixels, labels: [UInt8](repeating: 0, count: names.count), count: names.count, rows: dims[2], cols: dims[3], channels: dims[1])
    var values = [Float](repeating: 0, count: pixels.count)
    try set.normalizedBatch(Array(0..<names.count)[...], into: &values, normalization)
    return NPYArray(shape: [names.count] + Array(dims.dropFirst()), values: values)
  }

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
      guard let image = model.graph.inputs.first(where: { $0.dtype == .f32 }), let dims = model.shapes[image.name]?.dims,
            let out = model.graph.output, let outDims = model.shapes[out]?.dims else {
        throw DataError("\(file): the graph has no f32 image input or no output")
      }
      let x = try array(model, dims: dims)
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
