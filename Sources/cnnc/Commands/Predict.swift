import FileSystem
import ArgumentParser
import Foundation
import GraphIR
import LLVMBackend
import Passes
import Runtime

/// `cnnc predict`: classifies images (a PNG or JPEG, an image of an IDX file, or every PNG and JPEG of a directory) with
/// trained weights, normalised as the checkpoint says.
struct Predict: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Predict the class of an image (PNG or JPEG, IDX with --index, or every PNG and JPEG in a directory) with trained weights.",
    discussion: "Images are white-on-black like MNIST; pass --invert for dark digits on a light background.")

  @Argument(help: "The .graph file or .onnx model.") var file: String
  @Option(parsing: .unconditional, help: "Weights in safetensors format; an .onnx model's own by default.") var weights: String?
  @OptionGroup var modelOptions: ModelFileOptions
  @OptionGroup(title: "Inputs") var inputOptions: InputOptions
  @Argument(help: "A PNG or JPEG image of the graph's input size, an IDX images file, or a directory of PNG and JPEG images.") var image: String
  @Option(parsing: .unconditional, help: "Which image of an IDX file (0-based).") var index: Int = 0
  @Option(parsing: .unconditional, help: "How many images of an IDX file, from --index on.") var count: Int = 1
  @Flag(help: "Invert the image (255 - x) before classifying.") var invert = false
  @Flag(help: "Also print the raw logits (the graph's output).") var logits = false
  @Option(parsing: .unconditional, help: "Print only the K most probable classes, most probable first.") var top: Int?
  @Flag(help: "One JSON object per image: file, prediction, probabilities (and logits, label).") var json = false
  @Option(parsing: .unconditional, help: "A text file of class names, one per line in label order (as ImageNet's class list), printed beside each class number; a checkpoint trained on image folders records its folder names.")
  var labels: String?
  @Option(parsing: .unconditional, help: "Back end: interp (the reference interpreter, no compile step) or jit (compiled first; faster for many images).")
  var backend: BackendKind = .interp
  @OptionGroup(title: "Target") var targetOptions: TargetOptions
  @OptionGroup var cacheOptions: CacheOptions

  func validate() throws {
    guard index >= 0 else { throw ValidationError("--index must be at least 0, got \(index)") }
    guard count >= 1 else { throw ValidationError("--count must be at least 1, got \(count)") }
    if let top, top < 1 { throw ValidationError("--top must be at least 1, got \(top)") }
    try BackendKind.check(backend, allowed: [.interp, .jit])
  }

  /// One image to classify: where it came from, its pixels, and its true label when the data gives one.
  struct Item {
    var name: String
    var pixels: [UInt8]
    var label: Int?
  }

  func run() throws {
    let model = try TrainedModel(try GraphFile(path: file, verbose: modelOptions.verbose), weights: weights)
    try reportingErrors {
      guard let input = model.graph.inputs.first(where: { $0.dtype == .f32 }), let dims = model.shapes[input.name]?.dims, dims.count == 4,
            dims[1] == 1 || dims[1] == 3 else {
        throw DataError("the graph's image input must be [N, 1, H, W] (grey) or [N, 3, H, W] (colour) to classify images")
      }
      let (normalization, transforms) = try inputOptions.resolve(model)
      let items = try self.items(height: dims[2], width: dims[3], channels: dims[1], transforms: transforms)
      try normalization.check(channels: dims[1])
      let names = try classNames(model)
      var backend = try model.inferenceBackend(backend, inferenceCalls: [1], target: try targetOptions.resolve(runsHere: true), cache: cacheOptions.cache)
      for item in items {
        let pixels = invert ? item.pixels.map { 255 - $0 } : item.pixels
        let set = ImageDataset(images: pixels, labels: [0], count: 1, rows: dims[2], cols: dims[3], channels: dims[1])
        var x = [Float](repeating: 0, count: pixels.count)
        try set.normalizedBatch([0][...], into: &x, normalization)
        let z = try backend.infer(images: x, count: 1)
        // No class is more probable than another when the output is not finite (diverged or damaged weights).
        guard z.allSatisfy(\.isFinite) else {
          throw DataError("the network's output for \(item.name) is not finite (\(z.first { !$0.isFinite }!)): the weights in \(model.weightsSource) are diverged or damaged")
        }
        report(item, logits: z, alone: items.count == 1, names: names)
      }
    }
  }

  /// The images the argument names: every PNG and JPEG of a directory (sorted by name), one of them, or one IDX image.
  /// Photos go through `transforms` first; an IDX file's images are used as they are.
  func items(height: Int, width: Int, channels: Int, transforms: [ImageTransform]) throws -> [Item] {
    if let paths = try ImageFile.paths(named: image) {
      return try paths.map { path in
        Item(name: path, pixels: try ImageFile.read(path, transforms: transforms, channels: channels, height: height, width: width).pixels, label: nil)
      }
    }
    guard channels == 1 else { throw DataError("\(image): IDX images are grey; this graph takes \(channels)-channel images (give a PNG or JPEG)") }
    let bytes = try ImageDataset.readMaybeGzipped(image)
    let idx = try ImageDataset.parse(bytes, path: image, magic: 0x0000_0803)
    guard index < idx.dims[0], count <= idx.dims[0] - index else {
      throw DataError("--index \(index)\(count > 1 ? " --count \(count)" : "") is out of range: \(image) holds \(idx.dims[0]) images")
    }
    guard idx.dims[1] == height, idx.dims[2] == width else { throw DataError("\(image) holds \(idx.dims[1])x\(idx.dims[2]) images; the graph takes \(height)x\(width)") }
    let px = height * width, labels = try self.labels(ofIDX: image, count: idx.dims[0])
    return (index..<(index + count)).map { i in
      Item(name: "\(image)[\(i)]", pixels: Array(idx.data[(i * px)..<((i + 1) * px)]), label: labels.map { Int($0[i]) })
    }
  }

  /// The true labels from the labels file beside an IDX images file (`...-images-idx3-ubyte[.gz]` ->
  /// `...-labels-idx1-ubyte[.gz]`), when there is one that fits.
  func labels(ofIDX path: String, count: Int) throws -> [UInt8]? {
    let labels = path.replacingOccurrences(of: "-images-idx3-ubyte", with: "-labels-idx1-ubyte")
    guard labels != path, FileManager.default.fileExists(atPath: labels) else { return nil }
    let l = try ImageDataset.parse(try ImageDataset.readMaybeGzipped(labels), path: labels, magic: 0x0000_0801)
    guard l.dims[0] == count else { throw DataError("\(labels) holds \(l.dims[0]) labels for the \(count) images of \(path)") }
    return l.data
  }

  /// The class names to print: `--labels`' lines (as many as the model has classes), else the checkpoint's, else none.
  func classNames(_ model: TrainedModel) throws -> [String]? {
    let classes = model.graph.output.flatMap { model.shapes[$0]?.dims.last } ?? 0
    guard let labels else { return model.recordedClassNames?.count == classes ? model.recordedClassNames : nil }
    let text = String(decoding: try readRegularFile(labels, maxBytes: Self.maxLabelsBytes), as: UTF8.self)
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
    while lines.last?.isEmpty == true { lines.removeLast() }
    guard lines.count == classes else {
      throw DataError("\(labels) names \(lines.count) classes, one per line; the model has \(classes)")
    }
    return lines
  }

  /// The largest class-name file read (ImageNet's 1,000 names take about 30 KB).
  static let maxLabelsBytes = 16 << 20

  /// Prints one image's prediction: a table (one image) or a line (several), or a JSON object; a class's name
  /// follows its number when `names` gives one.
  func report(_ item: Item, logits z: [Float], alone: Bool, names: [String]?) {
    func named(_ k: Int) -> String { names.map { "\(k) \($0[k])" } ?? "\(k)" }
    let m = Double(z.max() ?? 0)
    let e = z.map { Foundation.exp(Double($0) - m) }
    let probs = e.map { $0 / e.reduce(0, +) }
    let order = probs.indices.sorted { probs[$0] != probs[$1] ? probs[$0] > probs[$1] : $0 < $1 }
    let shown = Array(order.prefix(top ?? probs.count))
    let best = order[0]
    if json {
      var fields = ["\"image\": \(SafeTensors.jsonString(item.name))", "\"prediction\": \(best)"]
      if let names { fields.append("\"class\": \(SafeTensors.jsonString(names[best]))") }
      if let l = item.label { fields.append("\"label\": \(l)") }
      fields.append("\"probabilities\": {" + shown.map { "\"\($0)\": \(probs[$0])" }.joined(separator: ", ") + "}")
      if logits { fields.append("\"logits\": [" + z.map { "\($0)" }.joined(separator: ", ") + "]") }
      print("{" + fields.joined(separator: ", ") + "}")
      return
    }
    let truth = item.label.map { ", true label \($0)\($0 == best ? "" : ": wrong")" } ?? ""
    guard alone else {
      print("\(item.name): \(named(best)) (p = \(String(format: "%.6f", probs[best])))\(truth)")
      return
    }
    print("prediction: \(named(best)) (p = \(String(format: "%.6f", probs[best])))\(truth)")
    // The classes in order, or the top K by probability; bars of 40 characters.
    for k in top == nil ? Array(probs.indices) : shown {
      let bar = String(repeating: "#", count: Int((probs[k] * 40).rounded()))
      let name = names.map { "  " + $0[k] } ?? ""
      print(String(format: "  %2d", k) + name + String(format: "  %.6f  ", probs[k]) + (logits ? String(format: "logit %9.4f  ", z[k]) : "") + bar)
    }
  }
}
