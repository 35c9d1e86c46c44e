import CNNCTestSupport
import Foundation
import GraphIR
import LLVMBackend
import Passes
import Runtime
import Testing

/// Graphs/resnet8.graph (32x32 RGB, batch norm, residual stages with stride-2 projection shortcuts) trains
/// through the JIT on images generated for the test: each class a fixed random colour pattern under noise.
@Suite struct ResNetTests {
  static let classes = 10, side = 32, channels = 3

  /// `count` seeded images of the class patterns with noise, and their labels.
  static func batch(_ count: Int, templates: [[Float]], rng: inout SeededRandom) -> ([Float], [Int32]) {
    var images: [Float] = [], labels: [Int32] = []
    for _ in 0..<count {
      let k = Int(rng.next() % UInt64(classes))
      labels.append(Int32(k))
      images += templates[k].map { $0 + rng.uniform(-0.8, 0.8) }
    }
    return (images, labels)
  }

  @Test func resnet8LossFallsOnGeneratedImages() throws {
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent("resnet8.graph"))
    let batch = 32
    let shapes = try inferShapes(g, batch: batch)
    #expect(shapes["image"]!.dims == [batch, Self.channels, Self.side, Self.side])
    var rng = SeededRandom(seed: 8)
    let templates = (0..<Self.classes).map { _ in (0..<(Self.channels * Self.side * Self.side)).map { _ in rng.uniform(-1, 1) } }
    let adam = Optimizer(kind: .adam, learningRate: 2e-3)
    let b = try CompiledBackend(name: "jit", graph: g, batch: batch, optimizer: adam, compiler: try JITCompiler(target: .host()),
                                inferenceCalls: [batch], shards: 2)
    try b.load(Parameters(graph: g, shapes: shapes, seed: 8), adam)
    var losses: [Float] = []
    for step in 1...40 {
      let (images, labels) = Self.batch(batch, templates: templates, rng: &rng)
      losses.append(try b.trainStep(images: images, labels: labels, seed: 8, step: step, learningRate: 2e-3).loss)
    }
    let first = losses.prefix(5).reduce(0, +) / 5, last = losses.suffix(5).reduce(0, +) / 5
    #expect(first > 1.5, "starts near ln(10): \(first)")
    #expect(last < first * 0.3, "loss falls: \(first) -> \(last)")
    // The running statistics moved, and inference on fresh images of the patterns is mostly right.
    let (images, labels) = Self.batch(batch, templates: templates, rng: &rng)
    let logits = try b.infer(images: images, count: batch)
    let correct = (0..<batch).filter { i in
      let row = logits[(i * Self.classes)..<((i + 1) * Self.classes)]
      return row.firstIndex(of: row.max()!)! - i * Self.classes == Int(labels[i])
    }.count
    #expect(correct >= batch * 3 / 4, "\(correct) of \(batch) generated test images right")
  }
}
