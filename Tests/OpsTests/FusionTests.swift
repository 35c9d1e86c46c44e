import CNNCTestSupport
import Foundation
import GraphIR
import Passes
import Runtime
import Testing

/// Fused and unfused programs give equal results; the fused graph re-parses and verifies.
@Suite struct FusionTests {
  static let graphs = ((try? Fixtures.exampleGraphs()) ?? []).map(\.lastPathComponent)

  @Test(arguments: graphs) func fusedEqualsUnfused(_ name: String) throws {
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent(name))
    var check = try GradCheck(source: Printer.print(g), batch: 2)
    // Keep pre-activations away from relu's kink so ties cannot differ between orders of evaluation.
    for k in check.parameters.keys { check.parameters[k]!.data = check.parameters[k]!.data.map { $0 * 0.5 } }
    let grad = check.backward
    let fused = fuseConvReLUPool(grad, shapes: check.shapes)
    try Verifier.verify(fused)
    let fusedShapes = try inferShapes(fused, batch: 2)
    #expect(try Parser.parse(Printer.print(fused), defaultName: "x") == fused)
    let a = try Interpreter<Double>(graph: grad, shapes: check.shapes).run(inputs: check.inputs, parameters: check.parameters, context: check.context)
    let b = try Interpreter<Double>(graph: fused, shapes: fusedShapes).run(inputs: check.inputs, parameters: check.parameters, context: check.context)
    #expect(a[g.minimize!] == b[g.minimize!])
    for d in grad.gradients {
      let x = a[d.value]!.tensor!.data, y = b[fused.gradients.first { $0.parameter == d.parameter }!.value]!.tensor!.data
      #expect(zip(x, y).allSatisfy { abs($0 - $1) <= 1e-12 * max(1, abs($0)) }, "\(d.parameter)")
    }
    if name == "simplecnn.graph" {
      #expect(fused.nodes.filter { if case .conv2dReLUMaxPool = $0.op { true } else { false } }.count == 2)
      #expect(fused.nodes.filter { if case .reluMaxPoolGrad = $0.op { true } else { false } }.count == 2)
      #expect(fused.nodes.contains { if case .denseReLU = $0.op { true } else { false } })
      #expect(!fused.nodes.contains { $0.op == .relu || $0.op == .maxPool(PoolAttrs(size: 2)) })
    }
  }

  /// Inference with every batch norm folded into the layer before it (then fused) computes what the plain
  /// inference graph computes, in Double, with running statistics away from their initial 0 and 1.
  @Test(arguments: ["bncnn.graph", "resnet8.graph"]) func foldedInferenceEqualsUnfolded(_ name: String) throws {
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent(name))
    var check = try GradCheck(source: Printer.print(g), batch: 2)
    for k in check.parameters.keys where k.hasSuffix(".running_mean") { check.parameters[k]!.data = check.parameters[k]!.data.indices.map { 0.1 * Double($0 % 5) - 0.2 } }
    for k in check.parameters.keys where k.hasSuffix(".running_var") { check.parameters[k]!.data = check.parameters[k]!.data.indices.map { 0.5 + 0.1 * Double($0 % 7) } }
    let plain = try Pipeline(batch: 2, purpose: .inference, fuse: false).run(g, to: .fused)
    let folded = try Pipeline(batch: 2, purpose: .inference).run(g, to: .fused)
    #expect(!folded.graph.nodes.contains { if case .batchNorm = $0.op { true } else { false } })
    let context = ReferenceContext(training: false)
    let a = try Interpreter<Double>(graph: plain.graph, shapes: plain.shapes).run(inputs: check.inputs, parameters: check.parameters, context: context)
    let b = try Interpreter<Double>(graph: folded.graph, shapes: folded.shapes).run(inputs: check.inputs, parameters: check.parameters, context: context)
    let (x, y) = (a[plain.graph.output!]!.tensor!.data, b[folded.graph.output!]!.tensor!.data)
    #expect(x.count == y.count && zip(x, y).allSatisfy { abs($0 - $1) <= 1e-12 * max(1, abs($0)) })
  }

  /// Conv epilogues at inference (`fuseConvEpilogues`: activations, residual adds before and after the conv, an
  /// add of two convs) compute, in Double, what the unfused inference graph computes.
  @Test func fusedEpiloguesEqualUnfused() throws {
    let url = Fixtures.root.appendingPathComponent("Tests/Fixtures/epilogues.graph")
    let g = try Fixtures.parse(url)
    let check = try GradCheck(source: try String(contentsOf: url, encoding: .utf8), batch: 2)
    let plain = try Pipeline(batch: 2, purpose: .inference, fuse: false).run(g, to: .fused)
    let fused = try Pipeline(batch: 2, purpose: .inference).run(g, to: .fused)
    #expect(fused.graph.nodes.filter { if case .conv2dAct = $0.op { true } else { false } }.count == 4)
    let context = ReferenceContext(training: false)
    let a = try Interpreter<Double>(graph: plain.graph, shapes: plain.shapes).run(inputs: check.inputs, parameters: check.parameters, context: context)
    let b = try Interpreter<Double>(graph: fused.graph, shapes: fused.shapes).run(inputs: check.inputs, parameters: check.parameters, context: context)
    let (x, y) = (a[plain.graph.output!]!.tensor!.data, b[fused.graph.output!]!.tensor!.data)
    #expect(x.count == 6 && zip(x, y).allSatisfy { abs($0 - $1) <= 1e-12 * max(1, abs($0)) })
  }
}
