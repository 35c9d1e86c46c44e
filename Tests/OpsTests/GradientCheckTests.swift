import CNNCTestSupport
import GraphIR
import Passes
import Runtime
import Testing

/// Every op's gradient rule and backward kernel against central differences in Double, through
/// whole small graphs (each op's input gradient feeds an earlier parameter's gradient).
@Suite struct GradientCheckTests {
  static let graphs: [(String, String)] = [
    ("conv-relu-maxpool-conv-stride2-avgpool-dense-dropout", """
      input x: f32[N, 2, 9, 9]
      input y: i32[N]
      c1 = conv2d(x, filters: 3, kernel: 3, padding: 1)
      r1 = relu(c1)
      p1 = maxpool(r1, size: 2, stride: 1)
      c2 = conv2d(p1, filters: 4, kernel: 3, stride: 2)
      r2 = relu(c2)
      p2 = avgpool(r2, size: 2, stride: 1)
      f = flatten(p2)
      d1 = dense(f, units: 6)
      dr = dropout(d1, rate: 0.3)
      d2 = dense(dr, units: 5)
      loss = cross_entropy(d2, y)
      output d2
      minimize loss
      """),
    ("5x5-no-padding-overlapping-maxpool-no-bias", """
      input x: f32[N, 1, 11, 11]
      input y: i32[N]
      c1 = conv2d(x, filters: 2, kernel: 5, bias: false)
      p1 = maxpool(c1, size: 3, stride: 2)
      c2 = conv2d(p1, filters: 3, kernel: 2, padding: 2, stride: 3)
      f = flatten(c2)
      d = dense(f, units: 4, bias: false)
      loss = cross_entropy(d, y)
      output d
      minimize loss
      """),
    ("softmax-and-add", """
      input x: f32[N, 7]
      input y: i32[N]
      a = dense(x, units: 5)
      s = softmax(a)
      r = relu(a)
      j = add(s, r)
      b = dense(j, units: 3)
      loss = cross_entropy(b, y)
      output b
      minimize loss
      """),
  ]

  @Test(arguments: graphs.map(\.0)) func numericalGradientsMatch(_ name: String) throws {
    let src = Self.graphs.first { $0.0 == name }!.1
    let check = try GradCheck(source: src, batch: 3)
    let (error, checked) = try check.maxError()
    #expect(checked >= 12)
    #expect(error < 1e-6, "worst combined error \(error)")
  }

  @Test func aWrongGradientIsCaught() throws {
    // The check itself must be able to fail: perturb one parameter's analytic gradient.
    let check = try GradCheck(source: Self.graphs[2].1, batch: 2)
    var g = try check.symbolicGradients()
    g["a.weight"]!.data[0] += 0.01
    let h = 1e-6
    var plus = check.parameters, minus = check.parameters
    plus["a.weight"]!.data[0] += h
    minus["a.weight"]!.data[0] -= h
    let numeric = (try check.loss(plus) - check.loss(minus)) / (2 * h)
    #expect(abs(numeric - g["a.weight"]!.data[0]) > 1e-3)
  }
}
