import ArgumentParser
import Foundation
import GraphIR
import Passes
import Runtime

/// `cnnc predict`: classifies one image (a PNG or an image of an IDX file) with trained weights.
struct Predict: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Predict the class of one image (PNG, or IDX with --index) with trained weights.",
    discussion: "Images are white-on-black like MNIST; pass --invert for dark digits on a light background.")

  @Argument(help: "The .graph file.") var file: String
  @Option(help: "Weights in safetensors format.") var weights: String
  @Argument(help: "A PNG image of the graph's input size, or an IDX images file.") var image: String
  @Option(parsing: .unconditional, help: "Which image of an IDX file (0-based).") var index: Int = 0
  @Flag(help: "Invert the image (255 - x) before classifying.") var invert = false

  func run() throws {
    let f = try GraphFile(path: file)
    let shapes = try f.run { () throws(DiagnosticList) in try inferShapes(f.graph, batch: 1) }
    try reportingErrors {
      guard let input = f.graph.inputs.first(where: { $0.dtype == .f32 }), let dims = shapes[input.name]?.dims, dims.count == 4, dims[1] == 1 else {
        throw DataError("the graph's image input must be [N, 1, H, W]")
      }
      var pixels: [UInt8]
      if image.hasSuffix(".png") || image.hasSuffix(".PNG") {
        try requireRegularFile(image)
        guard let data = FileManager.default.contents(atPath: image) else { throw DataError("cannot read \(image)") }
        let png = try PNG.decode([UInt8](data), path: image)
        guard png.width == dims[3], png.height == dims[2] else {
          throw DataError("\(image) is \(png.width)x\(png.height); the graph takes \(dims[3])x\(dims[2]) images")
        }
        pixels = png.pixels
      } else {
        let bytes = try IDXDataset.readMaybeGzipped(image)
        let idx = try IDXDataset.parse(bytes, path: image, magic: 0x0000_0803)
        guard index >= 0, index < idx.dims[0] else { throw DataError("--index \(index) is out of range: \(image) holds \(idx.dims[0]) images") }
        guard idx.dims[1] == dims[2], idx.dims[2] == dims[3] else { throw DataError("\(image) holds \(idx.dims[1])x\(idx.dims[2]) images; the graph takes \(dims[2])x\(dims[3])") }
        let px = idx.dims[1] * idx.dims[2]
        pixels = Array(idx.data[(index * px)..<((index + 1) * px)])
      }
      if invert { pixels = pixels.map { 255 - $0 } }
      var params = Parameters(graph: f.graph, shapes: shapes, seed: 0)
      let st = try SafeTensors.read(from: weights)
      try params.load(st, path: weights)
      var backend = try InterpreterBackend(graph: f.graph)
      backend.load(params, Optimizer(kind: .adam, learningRate: 0))
      let set = IDXDataset(images: pixels, labels: [0], count: 1, rows: dims[2], cols: dims[3])
      var x = [Float](repeating: 0, count: pixels.count)
      set.normalizedBatch([0][...], into: &x, try Normalization(metadata: st.metadata) ?? .mnist)
      let logits = try backend.infer(images: x, count: 1)
      let m = logits.max() ?? 0
      let e = logits.map { Foundation.exp(Double($0 - m)) }
      let probs = e.map { $0 / e.reduce(0, +) }
      let best = probs.indices.max { probs[$0] < probs[$1] }!
      print("prediction: \(best) (p = \(String(format: "%.4f", probs[best])))")
      for (k, p) in probs.enumerated() { print(String(format: "  %2d  %.4f  %@", k, p, String(repeating: "#", count: Int((p * 40).rounded())))) }
    }
  }
}
