import Foundation
import GraphIR
import Passes
import Testing

/// Each pass as a pure function from `.graph` text to the printed graph it returns.
@Suite struct PassesTests {
  static func parse(_ text: String) throws -> Graph { try Parser.parse(text, defaultName: "g") }

  static let activations = """
    graph g
    input x: f32[N, 4]
    input y: i32[N]
    d = dense(x, units: 3)
    a = leaky_relu(d, slope: 0.2)
    s = sigmoid(a)
    loss = cross_entropy(s, y)
    output s
    minimize loss
    """

  /// Leaky relu's gradient reads its input, sigmoid's its output; the first dense gets no input gradient.
  @Test func differentiateWritesEachRule() throws {
    let g = try differentiate(try Self.parse(Self.activations))
    let expected = """
      graph g

      input x: f32[N, 4]
      input y: i32[N]

      d             = dense(x, units: 3)
      a             = leaky_relu(d, slope: 0.2)
      s             = sigmoid(a)
      loss          = cross_entropy(s, y)
      s_grad        = cross_entropy_grad(s, y)
      a_grad        = sigmoid_grad(s_grad, s)
      d_grad        = leaky_relu_grad(a_grad, d, slope: 0.2)
      d_weight_grad = dense_grad_weight(d_grad, x)
      d_bias_grad   = dense_grad_bias(d_grad)

      output s
      minimize loss
      gradient d.weight = d_weight_grad
      gradient d.bias = d_bias_grad

      """
    #expect(Printer.print(g) == expected)
    #expect(try Self.parse(Printer.print(g)) == g)
  }

  @Test func aDifferentiatedGraphIsRefusedNamingTheOp() throws {
    let g = try differentiate(try Self.parse(Self.activations))
    #expect(throws: DiagnosticList.self) { try differentiate(g) }
    do {
      _ = try differentiate(g)
    } catch {
      #expect(error.diagnostics.contains { $0.message.contains("'s_grad' is cross_entropy_grad, a compiler-formed op with no gradient rule") })
    }
  }

  @Test func shapesOfTheVersion11Ops() throws {
    let g = try Self.parse("""
      input x: f32[N, 3, 7, 5]
      a = tanh(x)
      b = add(a, x)
      p = global_avgpool(b)
      output p
      """)
    let s = try inferShapes(g, batch: 2)
    #expect(s["b"] == TensorType(.f32, [2, 3, 7, 5]))
    #expect(s["p"] == TensorType(.f32, [2, 3, 1, 1]))
  }

  /// The fused node keeps the conv's name (its parameters' names); a pooled output is renamed to it.
  @Test func fusionFormsConvReLUPoolAndKeepsThePooledOutput() throws {
    let g = try Self.parse("""
      graph g
      input x: f32[N, 1, 6, 6]
      c = conv2d(x, filters: 2, kernel: 3, padding: 1)
      r = relu(c)
      p = maxpool(r, size: 2)
      output p
      """)
    let fused = fuseConvReLUPool(g, shapes: try inferShapes(g, batch: 1))
    #expect(fused.nodes.map(\.op.spelling) == ["conv2d_relu_maxpool"])
    #expect(Printer.print(fused).contains("c = conv2d_relu_maxpool(x, filters: 2, kernel: 3, padding: 1, pool_size: 2)\n\noutput c\n"))
    try Verifier.verify(fused)
  }

  static let normalized = """
    graph g
    input x: f32[N, 1, 8, 8]
    input y: i32[N]
    c = conv2d(x, filters: 4, kernel: 3, padding: 1, bias: false)
    bn = batchnorm(c, eps: 0.001)
    r = relu(bn)
    p = maxpool(r, size: 2)
    shared = conv2d(p, filters: 4, kernel: 3, padding: 1)
    bn2 = batchnorm(shared)
    sum = add(bn2, shared)
    f = flatten(sum)
    d = dense(f, units: 6, bias: false)
    bn3 = batchnorm(d, affine: false)
    out = dense(bn3, units: 3)
    loss = cross_entropy(out, y)
    output out
    minimize loss
    """

  /// A batch norm whose input comes from a conv or dense used by nothing else becomes a fold node under its
  /// own name, applied by the layer (which then fuses with the relu and pool after it); one whose input has
  /// another user stays; training graphs keep every batch norm.
  @Test func inferenceBatchNormsFoldIntoTheLayerBefore() throws {
    let g = try Self.parse(Self.normalized)
    let t = try Pipeline(batch: 2, purpose: .inference).run(g, to: .fused)
    let printed = Printer.print(t.graph)
    #expect(printed.contains("bn     = batchnorm_fold(channels: 4, eps: 0.001)\nc      = conv2d_relu_maxpool(x, bn, filters: 4, kernel: 3, padding: 1, bias: false, scaled: true, pool_size: 2)"))
    #expect(printed.contains("bn2    = batchnorm(shared)"))
    #expect(printed.contains("bn3    = batchnorm_fold(channels: 6, affine: false)\nd      = dense(f, bn3, units: 6, bias: false, scaled: true)\nout    = dense(d, units: 3)"))
    #expect(t.graph.parameterNames.sorted() == prunedToOutput(g).parameterNames.sorted())
    #expect(t.graph.bufferNames.sorted() == prunedToOutput(g).bufferNames.sorted())
    try Verifier.verify(t.graph)
    // The folded dump re-parses to the same graph.
    #expect(try Self.parse(Printer.print(t.graph)) == t.graph)
    let training = try Pipeline(batch: 2, purpose: .training).run(g, to: .fused)
    #expect(training.graph.nodes.filter { if case .batchNorm = $0.op { true } else { false } }.count == 3)
    #expect(!training.graph.nodes.contains { if case .batchNormFold = $0.op { true } else { false } })
  }

  /// At inference a conv takes in the activation that is its only reader, or the residual add that is (and the
  /// activation after it), standing where the last of them stood; an add of two convs fuses into the first; a
  /// per-channel add and an add of a value to itself do not fuse. The result re-parses; training graphs keep
  /// their activations (`FusionTests` checks the fused graph computes what the unfused one does).
  @Test func inferenceEpiloguesFuseIntoTheConv() throws {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/epilogues.graph")
    let g = try Self.parse(try String(contentsOf: url, encoding: .utf8))
    let t = try Pipeline(batch: 2, purpose: .inference).run(g, to: .fused)
    let printed = Printer.print(t.graph)
    #expect(printed.contains("a     = conv2d_act(x, filters: 4, kernel: 3, padding: 1, act: clip, min: 0.0, max: 6.0)\n"), "\(printed)")
    #expect(printed.contains("b     = conv2d_act(a, x, filters: 4, kernel: 1, act: relu, residual: true)\n"), "\(printed)")
    #expect(printed.contains("d     = conv2d(b, filters: 4, kernel: 3, padding: 1)\nc     = conv2d_act(b, d, filters: 4, kernel: 1, residual: true)\n"), "\(printed)")
    #expect(printed.contains("gate  = conv2d_act(p, filters: 4, kernel: 1, act: hardsigmoid)\nm     = mul(c, gate)\ne     = conv2d(m, filters: 4, kernel: 1)\nbc    = add(e, p)\n"), "\(printed)")
    #expect(printed.contains("sq    = add(twice, twice)"), "\(printed)")
    try Verifier.verify(t.graph)
    #expect(try Self.parse(printed) == t.graph)
    let training = try Pipeline(batch: 2, purpose: .training).run(g, to: .fused)
    #expect(!training.graph.nodes.contains { if case .conv2dAct = $0.op { true } else { false } })
  }
}
