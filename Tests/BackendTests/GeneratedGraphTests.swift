import CNNCTestSupport
import Foundation
import GraphIR
import LLVMBackend
import Passes
import Runtime
import SwiftBackend
import Testing

/// Random valid graphs (the structure-aware generator) through both compiled back ends against the
/// reference interpreter: loss, logits, every gradient, inference, and the weights after an SGD step,
/// at several batch sizes and shard counts. `make test` runs `defaultCount` graphs;
/// `make fuzz-graphs` sets CNNC_GENERATED_GRAPHS to run thousands.
@Suite struct GeneratedGraphTests {
  static let defaultCount = 150
  static var count: Int { ProcessInfo.processInfo.environment["CNNC_GENERATED_GRAPHS"].flatMap(Int.init) ?? defaultCount }

  /// (batch, shards) pairs, cycled over the graphs.
  static let layouts = [(1, 1), (2, 2), (3, 1), (4, 2), (6, 3), (5, 1)]

  /// Gradients and one SGD step of the JIT against the interpreter, both with the same shard arithmetic.
  static func check(seed: UInt64, layout: (batch: Int, shards: Int)) throws {
    let g = RandomGraph(seed: seed)
    let what = "graph \(seed) (batch \(layout.batch), \(layout.shards) shards):\n\(g.source)"
    let d = try Differential(source: g.source, batch: layout.batch, seed: seed)
    if layout.shards == 1 {
      let ref = try d.reference(step: 1)
      let b = try CompiledBackend(name: "jit", graph: d.graph, batch: d.batch, optimizer: Optimizer(kind: .sgd, learningRate: 0),
                                  compiler: try JITCompiler(target: .host()), inferenceCalls: [d.batch])
      try b.load(d.parameters, Optimizer(kind: .sgd, learningRate: 0))
      let r = try b.trainStep(images: d.images, labels: d.labels, seed: 11, step: 1, learningRate: 0)
      expectClose([ref.loss], [r.loss], rtol: 1e-3, "loss of \(what)")
      expectClose(ref.logits, r.logits, rtol: 1e-3, atol: 1e-5, "logits of \(what)")
      let grads = b.gradients()
      for (p, gr) in ref.gradients { expectClose(gr, grads[p]!, rtol: 2e-3, atol: 1e-5, "\(p) gradient of \(what)") }
      // The step at lr 0 left the weights as they were but moved batch norm's running statistics: inference
      // reads the state after the step.
      var interp = try InterpreterBackend(graph: d.graph)
      interp.load(b.parameters(), Optimizer(kind: .sgd, learningRate: 0))
      expectClose(try interp.infer(images: d.images, count: d.batch), try b.infer(images: d.images, count: d.batch), rtol: 1e-3, atol: 1e-5,
                  "inference of \(what)")
    } else {
      let opt = Optimizer(kind: .sgd, learningRate: 0.5)
      let b = try CompiledBackend(name: "jit", graph: d.graph, batch: d.batch, optimizer: opt, compiler: try JITCompiler(target: .host()), shards: layout.shards)
      try b.load(d.parameters, opt)
      var interp = try InterpreterBackend(graph: d.graph, shards: layout.shards)
      interp.load(d.parameters, opt)
      let a = try interp.trainStep(images: d.images, labels: d.labels, seed: 11, step: 1, learningRate: 0.5)
      let c = try b.trainStep(images: d.images, labels: d.labels, seed: 11, step: 1, learningRate: 0.5)
      expectClose([a.loss], [c.loss], rtol: 1e-3, "loss of \(what)")
      expectClose(a.logits, c.logits, rtol: 1e-3, atol: 1e-5, "logits of \(what)")
      let p = interp.parameters(), q = b.parameters()
      for n in p.names + p.buffers { expectClose(p.values[n]!, q.values[n]!, rtol: 2e-3, atol: 1e-5, "\(n) after an SGD step, \(what)") }
    }
  }

  @Test func generatedGraphsAreValid() throws {
    for seed in 0..<UInt64(Self.count) {
      let g = RandomGraph(seed: seed)
      let parsed = try Parser.parse(g.source, defaultName: "gen")
      _ = try inferShapes(parsed, batch: 2)
    }
  }

  @Test func jitMatchesTheInterpreterOnGeneratedGraphs() throws {
    for seed in 0..<UInt64(Self.count) { try Self.check(seed: seed, layout: Self.layouts[Int(seed) % Self.layouts.count]) }
  }

  /// The Swift back end on a few generated graphs (each is one swiftc run).
  @Test func swiftBackendMatchesTheInterpreterOnGeneratedGraphs() throws {
    for seed in UInt64(1000)..<1003 {
      let g = RandomGraph(seed: seed)
      let d = try Differential(source: g.source, batch: 2, seed: seed)
      let ref = try d.reference(step: 1)
      let cache = NSTemporaryDirectory() + "cnnc-swift-\(UUID().uuidString)"
      let b = try CompiledBackend(name: "swift", graph: d.graph, batch: 2, optimizer: Optimizer(kind: .sgd, learningRate: 0),
                                  compiler: try SwiftCompiler(source: "generated", target: .host(), cacheDirectory: cache))
      try b.load(d.parameters, Optimizer(kind: .sgd, learningRate: 0))
      let r = try b.trainStep(images: d.images, labels: d.labels, seed: 11, step: 1, learningRate: 0)
      expectClose([ref.loss], [r.loss], rtol: 1e-3, "swift loss of graph \(seed):\n\(g.source)")
      for (p, gr) in ref.gradients { expectClose(gr, b.gradients()[p]!, rtol: 2e-3, atol: 1e-5, "swift \(p) gradient of graph \(seed):\n\(g.source)") }
    }
  }
}
