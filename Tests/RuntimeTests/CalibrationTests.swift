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
}
