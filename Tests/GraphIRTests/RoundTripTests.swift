import CNNCTestSupport
import Foundation
import GraphIR
import Passes
import Testing

/// Printing is canonical and re-parseable, and every pass keeps the verifier happy.
@Suite struct RoundTripTests {
  static let graphs = ((try? Fixtures.exampleGraphs()) ?? []).map(\.lastPathComponent)

  static func load(_ name: String) throws -> Graph { try Fixtures.parse(Fixtures.graphs.appendingPathComponent(name)) }

  @Test func thereAreExampleGraphs() { #expect(Self.graphs.count >= 7) }

  /// Format 1.4: an int8 conv's `input_scale` prints as the f32 it is and re-parses to the same bits, with its zero
  /// point (0 when omitted); a conv without them stays f32.
  @Test func int8AttributesParseAndPrint() throws {
    let scale = Float(0.012728233821690083)
    let g = try Parser.parse("""
      input x: f32[N, 3, 8, 8]
      a = conv2d(x, filters: 4, kernel: 3, padding: 1, input_scale: \(Double(scale)), input_zero_point: 33)
      b = conv2d(a, filters: 4, kernel: 1, input_scale: 0.5)
      c = conv2d(b, filters: 2, kernel: 1)
      output c
      """, defaultName: "q")
    guard case .conv2d(let a) = g.nodes[0].op, case .conv2d(let b) = g.nodes[1].op, case .conv2d(let c) = g.nodes[2].op else {
      Issue.record("convs expected")
      return
    }
    #expect(a.quantization == Quantization(scale: scale, zeroPoint: 33))
    #expect(b.quantization == Quantization(scale: 0.5, zeroPoint: 0))
    #expect(c.quantization == nil)
    #expect(g.int8Nodes.map(\.name) == ["a", "b"])
    let printed = Printer.print(g)
    #expect(printed.contains("input_scale: 0.5, input_zero_point: 0)"), "\(printed)")
    #expect(try Parser.parse(printed, defaultName: "q") == g)
  }

  /// Format 1.3: `state NODE "prefix"` gives a node's parameters and buffers PyTorch's dotted `state_dict` keys; it
  /// prints and re-parses, and `stateKey` maps names to keys (others unchanged).
  @Test func stateNamesParsePrintAndMapKeys() throws {
    let g = try Parser.parse("""
      input x: f32[N, 1, 8, 8]
      input label: i32[N]
      layer1_0_conv1 = conv2d(x, filters: 2, kernel: 3)
      layer1_0_bn1 = batchnorm(layer1_0_conv1)
      f = flatten(layer1_0_bn1)
      fc = dense(f, units: 3)
      loss = cross_entropy(fc, label)
      state layer1_0_conv1 "layer1.0.conv1"
      state layer1_0_bn1 "layer1.0.bn1"
      output fc
      minimize loss
      """, defaultName: "s")
    #expect(g.stateNames == ["layer1_0_conv1": "layer1.0.conv1", "layer1_0_bn1": "layer1.0.bn1"])
    #expect(g.stateKey("layer1_0_conv1.weight") == "layer1.0.conv1.weight")
    #expect(g.stateKey("layer1_0_bn1.num_batches_tracked") == "layer1.0.bn1.num_batches_tracked")
    #expect(g.stateKey("fc.bias") == "fc.bias")
    let printed = Printer.print(g)
    #expect(printed.contains("state layer1_0_conv1 \"layer1.0.conv1\"\n"), "\(printed)")
    #expect(try Parser.parse(printed, defaultName: "s") == g)
  }

  /// Format 1.2: a minus sign before a digit makes a negative number; each attribute's range still rules.
  @Test func negativeNumbersParseAndRoundTrip() throws {
    let source = { (slope: String, padding: String) in """
      graph neg
      input x: f32[N, 1, 8, 8]
      input label: i32[N]
      c = conv2d(x, filters: 2, kernel: 3, padding: \(padding))
      a = leaky_relu(c, slope: \(slope))
      f = flatten(a)
      d = dense(f, units: 3)
      loss = cross_entropy(d, label)
      output d
      minimize loss
      """ }
    let g = try Parser.parse(source("-0.5", "1"), defaultName: "neg")
    #expect(Printer.print(g).contains("slope: -0.5"))
    #expect(try Parser.parse(Printer.print(g), defaultName: "neg") == g)
    #expect(try Parser.parse(source("-2", "0"), defaultName: "neg") != g)
    do {
      _ = try Parser.parse(source("0.1", "-1"), defaultName: "neg")
      Issue.record("padding -1 was accepted")
    } catch {
      #expect("\(error)".contains("'padding' must be non-negative, got -1"), "\(error)")
    }
    // A minus sign apart from its digits is still not a number.
    #expect(throws: (any Error).self) { try Parser.parse(source("- 0.5", "1"), defaultName: "neg") }
  }

  @Test(arguments: graphs) func parsePrintParse(_ name: String) throws {
    let g = try Self.load(name)
    try Verifier.verify(g)
    let text = Printer.print(g)
    let again = try Parser.parse(text, defaultName: "other")
    #expect(again == g)
    #expect(Printer.print(again) == text, "printing is canonical")
  }

  @Test(arguments: graphs) func shapedAndGradStagesReparse(_ name: String) throws {
    let g = try Self.load(name)
    let shapes = try inferShapes(g, batch: 8)
    let shaped = try Parser.parse(Printer.print(g, types: shapes.types), defaultName: "x")
    #expect(shaped == g)
    let grad = try differentiate(g)
    try Verifier.verify(grad)
    let gradShapes = try inferShapes(grad, batch: 8)
    let reparsed = try Parser.parse(Printer.print(grad, types: gradShapes.types), defaultName: "x")
    #expect(reparsed == grad)
    // Every parameter has exactly one gradient, of the parameter's own type.
    #expect(Set(grad.gradients.map(\.parameter)) == Set(g.parameterNames))
    for d in grad.gradients { #expect(gradShapes[d.value] == gradShapes[d.parameter]) }
  }

  @Test func simpleCNNPlan() throws {
    let g = try Self.load("simplecnn.graph")
    let rows = summarize(g, try inferShapes(g, batch: 64))
    #expect(rows.reduce(0) { $0 + $1.parameters } == 421_642)
    #expect(rows.reduce(0) { $0 + $1.flopsPerImage } == 8_482_304)
    #expect(rows.first { $0.name == "pool2" }?.type == TensorType(.f32, [64, 64, 7, 7]))
  }

  @Test func noInputGradientForTheFirstConv() throws {
    let grad = try differentiate(try Self.load("simplecnn.graph"))
    #expect(!grad.nodes.contains { $0.name == "image_grad" })
    #expect(grad.nodes.filter { if case .conv2dGradInput = $0.op { true } else { false } }.count == 1)
  }

  @Test func gradientsOfSharedValuesAreSummed() throws {
    let src = """
      input x: f32[N, 4]
      input y: i32[N]
      a = dense(x, units: 3)
      r = relu(a)
      b = add(a, r)
      loss = cross_entropy(b, y)
      output b
      minimize loss
      """
    let grad = try differentiate(try Parser.parse(src, defaultName: "shared"))
    try Verifier.verify(grad)
    // a feeds both `r` and `b`, so its gradient is the sum of two contributions.
    let sums = grad.nodes.filter { $0.op == .add && $0.name.hasPrefix("a_grad") }
    #expect(sums.count == 1)
    #expect(grad.node(named: "a_weight_grad") != nil)
    #expect(grad.gradients.map(\.parameter) == ["a.weight", "a.bias"])
  }
}
