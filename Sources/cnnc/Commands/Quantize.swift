import FileSystem
import ArgumentParser
import Foundation
import GraphIR
import LLVMBackend
import Passes
import Runtime

/// `cnnc quantize`: post-training static int8 quantization. Calibration images run through the float model; each
/// ungrouped conv gets its input's u8 scale and zero point (`input_scale`, `input_zero_point`), its weights s8 per
/// filter when the program is built. Writes the quantized graph and the weights beside it.
struct Quantize: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Quantize a trained model's convolutions to int8 from calibration images (post-training, static).",
    discussion: """
      Each convolution of one group and each dense layer gets its input quantized to u8 with a scale and zero point \
      chosen from what calibration saw (the float model compiled to output every such layer's input), and its weights to s8 with one scale per filter or unit; products are summed \
      in 32-bit integers (AVX512_VNNI where the CPU has it). Grouped and depthwise convolutions and the rest stay f32. \
      Writes the graph to --out (NAME.graph) and the weights beside it (NAME.safetensors), which eval, predict, \
      infer and bench take.
      """)

  @Argument(help: "The .graph file or .onnx model.") var file: String
  @Option(parsing: .unconditional, help: "Weights in safetensors format; an .onnx model's own by default.") var weights: String?
  @OptionGroup var modelOptions: ModelFileOptions
  @OptionGroup(title: "Inputs") var inputOptions: InputOptions
  @Option(parsing: .unconditional, help: "Calibration data: a directory of IDX, CIFAR-10 or CIFAR-100 binary files, or image folders (its training set is used).")
  var calibrate: String
  @Option(parsing: .unconditional, help: "Calibration images, evenly spaced through the set.") var images: Int = 256
  @Option(parsing: .unconditional, help: "How each input's range is chosen: minmax (the extremes seen) or percentile (--percentile of an evenly spaced sample).")
  var method: Calibration.Method = .minmax
  @Option(parsing: .unconditional, help: "The percentile of the high end for --method percentile (the low end's is 100 minus it).") var percentile: Double = 99.99
  @Flag(help: "Keep the first convolution (the one reading the model's input) in f32.") var keepFirst = false
  @Flag(help: "Keep the last layer int8 would take (the classifier) in f32.") var keepLast = false
  @Flag(help: "Weights in -64...64 instead of -127...127 (7 bits): AVX2 and AVX-512 CPUs without VNNI then multiply u8 x s8 pairs in 16 bits without saturating, at about twice the speed of the full range there.")
  var reduceRange = false
  @Option(parsing: .unconditional, help: "The quantized graph to write, NAME.graph; its weights go to NAME.safetensors beside it.") var out: String
  @Option(parsing: .unconditional, help: "Where calibration runs: jit (a compiled program that outputs every layer's input) or interp (the reference interpreter, slow at 224x224).")
  var backend: BackendKind = .jit
  @OptionGroup(title: "Target") var targetOptions: TargetOptions
  @OptionGroup var cacheOptions: CacheOptions

  /// Images per calibration batch (fewer where the layers' inputs of a batch would exceed `probeFloats`).
  static let calibrationBatch = 16
  /// The most floats a compiled calibration batch outputs (every calibrated layer's input of each image): 256 MB.
  static let probeFloats = 1 << 26

  func validate() throws {
    try BackendKind.check(backend, allowed: [.jit, .interp])
    guard images >= 1 else { throw ValidationError("--images must be at least 1, got \(images)") }
    guard percentile > 50, percentile <= 100 else { throw ValidationError("--percentile must be above 50 and at most 100, got \(percentile)") }
    guard out.hasSuffix(".graph"), Path.lastComponent(out) != ".graph" else {
      throw ValidationError("--out must name a .graph file (NAME.graph; the weights go to NAME.safetensors beside it), got '\(out)'")
    }
  }

  func run() throws {
    let graphFile = try GraphFile(path: file, verbose: modelOptions.verbose)
    let model = try TrainedModel(graphFile, weights: weights)
    try reportingErrors {
      guard model.graph.int8Nodes.isEmpty else { throw DataError("\(file) is quantized already (it has int8 layers)") }
      let graphPath = out, weightsPath = Path.deletingExtension(out) + ".safetensors"
      try checkOutputFile(graphPath)
      try checkOutputFile(weightsPath)
      for (written, read) in [(graphPath, file), (weightsPath, weights ?? file)] where resolvedPath(written).map({ $0 == resolvedPath(read) }) ?? false {
        throw DataError("--out \(out) would overwrite \(read), which it reads")
      }
      let (normalization, transforms) = try inputOptions.resolve(model)
      let channels = model.graph.inputs.first { $0.dtype == .f32 }.flatMap { model.shapes[$0.name]?.dims[1] }
      let set = try ImageDataset.loadSet(directory: calibrate, training: true, transforms: transforms, channels: channels)
      try normalization.check(channels: set.channels)
      let count = min(images, set.count)
      // Evenly spaced through the set, so a set sorted by class still calibrates on every class.
      let chosen = (0..<count).map { $0 * set.count / count }
      let convs = Calibration.candidates(model.graph, shapes: model.shapes, keepFirst: keepFirst, keepLast: keepLast)
      guard !convs.isEmpty else { throw DataError("\(file) has no layer int8 can take (a convolution of one group, undilated, or a dense layer)") }
      var calibration: Calibration
      if backend == .interp {
        calibration = Calibration(graph: model.graph, convs: convs, batches: (count + Self.calibrationBatch - 1) / Self.calibrationBatch)
        for first in stride(from: 0, to: count, by: Self.calibrationBatch) {
          let batch = chosen[first..<min(count, first + Self.calibrationBatch)]
          var pixels = [Float](repeating: 0, count: batch.count * set.imageBytes)
          try set.normalizedBatch(batch, into: &pixels, normalization)
          try calibration.observe(images: pixels, count: batch.count, parameters: model.parameters)
        }
      } else {
        // One compiled program computes every calibrated layer's input; its batch keeps the output bounded.
        let (probe, width, slices) = try Calibration.probe(model.graph, convs: convs, shapes: model.shapes)
        let per = max(1, min(Self.calibrationBatch, Self.probeFloats / max(1, width)))
        calibration = Calibration(graph: model.graph, convs: convs, batches: (count + per - 1) / per)
        let calls = [min(per, count)] + (count > per && count % per > 0 ? [count % per] : [])
        let program = try CompiledBackend(inferenceOf: probe, compiler: try JITCompiler(target: try targetOptions.resolve(runsHere: true), cache: cacheOptions.cache),
                                          inferenceCalls: calls)
        try program.loadParameters(model.parameters)
        for first in stride(from: 0, to: count, by: per) {
          let batch = chosen[first..<min(count, first + per)]
          var pixels = [Float](repeating: 0, count: batch.count * set.imageBytes)
          try set.normalizedBatch(batch, into: &pixels, normalization)
          calibration.observe(probed: try program.infer(images: pixels, count: batch.count), count: batch.count, width: width, slices: slices)
        }
      }
      let weightSteps = Int(reduceRange ? Int8Arithmetic.reducedWeightSteps : Int8Arithmetic.fullWeightSteps)
      let quantizations = calibration.quantizations(method, percentile: percentile, weightSteps: weightSteps)
      let quantized = Calibration.apply(quantizations, to: model.graph)
      // The weights as they came, with their metadata (normalisation, transforms, class names).
      let (weightsFile, _) = try graphFile.weights(weights)
      try writeAtomically(Array(Printer.print(quantized).utf8), to: graphPath)
      try weightsFile.write(to: weightsPath)
      let layers = model.graph.nodes.filter { switch $0.op { case .conv2d, .dense: true; default: false } }.count
      print("quantized \(quantizations.count) of \(layers) convolutions and dense layers to int8 (\(method.rawValue) over \(calibration.observed) images of \(calibrate); weights within ±\(weightSteps))")
      print("wrote \(graphPath) and \(weightsPath); run it with: cnnc eval \(graphPath) --weights \(weightsPath)")
    }
  }
}

extension Calibration.Method: ExpressibleByArgument {}
