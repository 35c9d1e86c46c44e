import GraphIR
import Passes
import Runtime
import Testing

/// Calibration observes each candidate conv's input in the float graph and covers the range its method picks.
@Suite struct CalibrationTests {
  static let source = """
    input x: f32[N, 2, 4, 4]
    a = conv2d(x, filters: 4, kernel: 3, padding: 1)
    r = relu(a)
    d = conv2d(r, filters: 4, kernel: 3, groups: 4)
    b = conv2d(r, filters: 3, kernel: 1)
    output b
    """

  /// Ungrouped convs are candidates (the depthwise one is not); `keepFirst` leaves out the one reading the input.
  @Test func candidatesAreTheUngroupedConvs() throws {
    let g = try Parser.parse(Self.source, defaultName: "c"), shapes = try inferShapes(g, batch: 1)
    #expect(Calibration.candidates(g, shapes: shapes, keepFirst: false) == ["a", "b"])
    #expect(Calibration.candidates(g, shapes: shapes, keepFirst: true) == ["b"])
    #expect(Calibration.candidates(g, shapes: shapes, keepFirst: false, keepLast: true) == ["a"])
  }

  /// Min-max covers exactly the values seen over every batch (the first conv's input is the images); a percentile
  /// clamps the one outlier; the quantized graph carries the results and only those convs change.
  @Test func minMaxAndPercentileCoverWhatWasSeen() throws {
    let g = try Parser.parse(Self.source, defaultName: "c"), shapes = try inferShapes(g, batch: 1)
    let parameters = Parameters(graph: g, shapes: shapes, seed: 5)
    var c = Calibration(graph: g, convs: ["a", "b"], batches: 2)
    var first = (0..<32).map { Float($0) / 32 - 0.25 }, second = first.map { $0 * 0.5 }
    first[7] = 40
    second[3] = .nan
    try c.observe(images: first, count: 1, parameters: parameters)
    try c.observe(images: second, count: 1, parameters: parameters)
    #expect(c.observed == 2)
    let minmax = c.quantizations(.minmax, percentile: 99.99)
    #expect(minmax["a"] == Quantization.covering(low: -0.25, high: 40), "NaN is not seen")
    #expect(minmax["b"]!.zeroPoint == 0, "after a relu the range starts at 0")
    let percentile = c.quantizations(.percentile, percentile: 95)
    #expect(percentile["a"]!.scale < minmax["a"]!.scale / 10, "the outlier 40 clamps")
    let q = Calibration.apply(minmax, to: g)
    #expect(q.int8Nodes.map(\.name) == ["a", "b"])
    #expect(q.nodes[2].op == g.nodes[2].op)
  }

  /// The probe graph outputs each calibrated layer's input once (`b` and `c` share `r`), and observing its rows
  /// records what observing the layers in the interpreter does, bit for bit.
  @Test func probedInputsRecordWhatTheInterpreterSees() throws {
    let source = """
      input x: f32[N, 2, 4, 4]
      a = conv2d(x, filters: 4, kernel: 3, padding: 1)
      r = relu(a)
      b = conv2d(r, filters: 3, kernel: 1)
      c = conv2d(r, filters: 3, kernel: 1)
      s = add(b, c)
      f = flatten(s)
      d = dense(f, units: 5)
      output d
      """
    let g = try Parser.parse(source, defaultName: "c"), shapes = try inferShapes(g, batch: 1)
    let parameters = Parameters(graph: g, shapes: shapes, seed: 3), layers = ["a", "b", "c", "d"]
    let (probe, width, slices) = try Calibration.probe(g, convs: layers, shapes: shapes)
    // x (32), r (64) once for b and c, f (48).
    #expect(width == 32 + 64 + 48 && slices.map(\.offset) == [0, 32, 32, 96] && slices.map(\.count) == [32, 64, 64, 48])
    #expect(probe.output.map { probe.node(named: $0)?.op } == .concat(count: 3))
    var direct = Calibration(graph: g, convs: layers, batches: 2), probed = direct
    var interpreter = try InterpreterBackend(graph: probe)
    interpreter.load(parameters, Optimizer(kind: .adam, learningRate: 0))
    for seed in 0..<2 {
      let images = (0..<96).map { Float(($0 * 37 + seed * 11) % 23) / 7 - 1.5 }
      try direct.observe(images: images, count: 3, parameters: parameters)
      probed.observe(probed: try interpreter.infer(images: images, count: 3), count: 3, width: width, slices: slices)
    }
    #expect(probed.observed == 6)
    for method in Calibration.Method.allCases {
      #expect(direct.quantizations(method, percentile: 99) == probed.quantizations(method, percentile: 99), "\(method)")
    }
  }
}
