import Foundation
import GraphIR
import Lowering
import ONNX
import Passes
import Runtime

/// The inputs cnnc reads from users, each as a function that must return for any bytes: success or a
/// clear error, never a trap, a crash or a hang. `cnnc-fuzz` runs them under libFuzzer (`make fuzz
/// TARGET=...`); the tests replay `Fuzz/regressions/TARGET/` and seeded mutations through the same code.
public enum FuzzTarget: String, CaseIterable, Sendable {
  /// A `.graph` file through the whole pipeline: parse, dialect check, shapes, gradients, fusion, lowering, memory plan.
  case graph
  /// A safetensors file read as weights (loaded into a small graph's parameters) and as optimiser state.
  case safetensors
  /// An IDX file, raw or gzip-compressed, as images and as labels.
  case idx
  /// A PNG image.
  case png
  /// A JPEG image (decoded by libjpeg-turbo, its EXIF orientation read by cnnc).
  case jpeg
  /// An ONNX model: imported, then its graph through shapes and the inference lowering.
  case onnx
  /// A NumPy `.npy` array (`cnnc infer`'s input).
  case npy

  /// Runs one input; returns true when it was accepted, false when it was refused with an error.
  @discardableResult
  public func run(_ bytes: [UInt8]) -> Bool {
    switch self {
    case .graph: Self.graph(bytes)
    case .safetensors: Self.safetensors(bytes)
    case .idx: Self.idx(bytes)
    case .png: (try? PNG.decode(bytes, path: "fuzz.png")) != nil
    case .jpeg: (try? ImageFile.decode(bytes, path: "fuzz.jpg")) != nil
    case .onnx: Self.onnx(bytes)
    case .npy: (try? NPYArray.parse(bytes, path: "fuzz.npy")) != nil
    }
  }

  /// Batch sizes the pipeline is lowered at: one image, and an odd count that splits into no shards.
  static let batches = [1, 3]
  /// Training starts at two images: batch norm refuses to train on one value per channel.
  static let trainingBatches = [2, 3]

  static func graph(_ bytes: [UInt8]) -> Bool {
    do {
      let g = try Parser.parse(bytes, defaultName: "fuzz")
      _ = Printer.print(g)
      try Verifier.requireForwardDialect(g)
      for batch in batches {
        let shapes = try inferShapes(g, batch: batch)
        _ = summarize(g, shapes)
        if g.output != nil { _ = try lower(g, batch: batch, mode: .infer, target: fuzzTarget) }
      }
      for batch in trainingBatches where g.minimize != nil {
        _ = try lower(g, batch: batch, mode: .train(OptimizerSpec(kind: .adam)), target: fuzzTarget)
        _ = try lowerOptimizer(g, OptimizerSpec(kind: .sgd, momentum: 0.9), target: fuzzTarget)
      }
      return true
    } catch {
      _ = error.render(file: "fuzz.graph", source: bytes)
      return false
    }
  }

  /// The graph whose parameters fuzzed weights are loaded into.
  public static let weightsGraph = try! Parser.parse("""
    input x: f32[N, 1, 4, 4]
    c = conv2d(x, filters: 2, kernel: 3)
    f = flatten(c)
    d = dense(f, units: 3)
    output d
    """, defaultName: "fuzz")

  static func safetensors(_ bytes: [UInt8]) -> Bool {
    guard let st = try? SafeTensors.parse(bytes, path: "fuzz.safetensors") else { return false }
    _ = st.serialized()
    var p = Parameters(graph: weightsGraph, shapes: try! inferShapes(weightsGraph, batch: 1), seed: 1)
    _ = try? p.load(st, path: "fuzz.safetensors")
    _ = try? OptimizerCheckpoint(st, path: "fuzz.safetensors", parameters: p, kind: .adam, momentum: 0)
    return true
  }

  static func onnx(_ bytes: [UInt8]) -> Bool {
    guard let m = try? ONNXImport.translate(Data(bytes), path: "fuzz.onnx") else { return false }
    guard let shapes = try? inferShapes(m.graph, batch: 1) else { return false }
    _ = summarize(m.graph, shapes)
    return (try? lower(m.graph, batch: 1, mode: .infer, target: fuzzTarget)) != nil
  }

  static func idx(_ bytes: [UInt8]) -> Bool {
    // The gzip path reads a file, as the data loader does.
    let path = NSTemporaryDirectory() + "cnnc-fuzz-\(getpid()).idx"
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { return false }
    defer { unlink(path) }
    var accepted = false
    for magic: UInt32 in [0x0000_0803, 0x0000_0801] {
      guard let raw = try? ImageDataset.readMaybeGzipped(path, limit: 1 << 24), let parsed = try? ImageDataset.parse(raw, path: path, magic: magic) else { continue }
      if magic == 0x803 {
        let set = ImageDataset(images: parsed.data, labels: [UInt8](repeating: 0, count: parsed.dims[0]), count: parsed.dims[0],
                             rows: parsed.dims[1], cols: parsed.dims[2], path: path)
        _ = try? set.validateImages(forInput: [1, 1, 28, 28])
        if set.count > 0 {
          var out = [Float](repeating: 0, count: set.imageBytes)
          try? set.normalizedBatch([0][...], into: &out)
        }
      }
      accepted = true
    }
    return accepted
  }
}

/// The target the pipeline target lowers for: a fixed AVX2 CPU, so a finding replays the same on every machine.
let fuzzTarget = Target.named("x86-64-v3", isa: .avx2)
