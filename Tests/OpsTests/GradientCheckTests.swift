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
    ("v1.1-activations-residual-global-avgpool", """
      input x: f32[N, 2, 6, 5]
      input y: i32[N]
      c1 = conv2d(x, filters: 3, kernel: 3, padding: 1)
      l1 = leaky_relu(c1, slope: 0.2)
      c2 = conv2d(l1, filters: 3, kernel: 3, padding: 1)
      t2 = tanh(c2)
      r = add(t2, l1)
      l2 = leaky_relu(r, slope: 1.5)
      c3 = conv2d(l2, filters: 4, kernel: 2, stride: 2)
      s3 = sigmoid(c3)
      g = global_avgpool(s3)
      f = flatten(g)
      d = dense(f, units: 3)
      l3 = leaky_relu(d)
      loss = cross_entropy(l3, y)
      output l3
      minimize loss
      """),
    ("v1.1-batchnorm-conv-and-dense-affine-and-not", """
      input x: f32[N, 2, 5, 5]
      input y: i32[N]
      c1 = conv2d(x, filters: 3, kernel: 3, padding: 1)
      b1 = batchnorm(c1)
      t1 = tanh(b1)
      c2 = conv2d(t1, filters: 2, kernel: 3)
      b2 = batchnorm(c2, affine: false, eps: 0.001)
      f = flatten(b2)
      d1 = dense(f, units: 4)
      b3 = batchnorm(d1, momentum: 0.5)
      d2 = dense(b3, units: 3)
      loss = cross_entropy(d2, y)
      output d2
      minimize loss
      """),
    ("v1.3-padded-and-ceil-pools-hard-activations-silu", """
      input x: f32[N, 2, 9, 8]
      input y: i32[N]
      c1 = conv2d(x, filters: 3, kernel: 3, padding: 1)
      s1 = silu(c1)
      p1 = maxpool(s1, size: 3, stride: 2, padding: 1)
      c2 = conv2d(p1, filters: 4, kernel: 1)
      h2 = hardswish(c2)
      p2 = avgpool(h2, size: 3, stride: 2, padding: 1, ceil_mode: true)
      q2 = avgpool(h2, size: 2, stride: 2, padding: 1, count_include_pad: false)
      g2 = hardsigmoid(c2)
      m2 = maxpool(g2, size: 2, stride: 2, ceil_mode: true)
      k2 = clip(c2, min: -0.3, max: 0.4)
      a2 = avgpool(k2, size: 2, ceil_mode: true, padding: 1)
      f1 = flatten(p2)
      f2 = flatten(q2)
      f3 = flatten(m2)
      f4 = flatten(a2)
      d1 = dense(f1, units: 3)
      d2 = dense(f2, units: 3)
      d3 = dense(f3, units: 3)
      d4 = dense(f4, units: 3)
      e1 = add(d1, d2)
      e2 = add(d3, d4)
      o = add(e1, e2)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """),
    ("v1.3-depthwise-grouped-dilated-conv", """
      input x: f32[N, 4, 7, 6]
      input y: i32[N]
      d1 = conv2d(x, filters: 4, kernel: 3, padding: 1, groups: 4)
      t1 = tanh(d1)
      d2 = conv2d(t1, filters: 8, kernel: 3, stride: 2, padding: 1, groups: 2, dilation: 2)
      s2 = silu(d2)
      d3 = conv2d(s2, filters: 8, kernel: 2, groups: 8, bias: false)
      f = flatten(d3)
      o = dense(f, units: 3)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """),
    ("v1.3-concat-and-gated-products", """
      input x: f32[N, 3, 6, 5]
      input y: i32[N]
      c1 = conv2d(x, filters: 4, kernel: 3, padding: 1)
      t1 = tanh(c1)
      j = concat(t1, x, c1)
      g = global_avgpool(j)
      c2 = conv2d(g, filters: 11, kernel: 1)
      s = sigmoid(c2)
      m = mul(j, s)
      n2 = mul(s, m)
      p = mul(t1, c1)
      c3 = conv2d(n2, filters: 4, kernel: 3, stride: 2)
      c4 = conv2d(p, filters: 4, kernel: 3, stride: 2)
      a = add(c3, c4)
      f = flatten(a)
      o = dense(f, units: 3)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """),
    ("v1.3-gelu-and-per-channel-add", """
      input x: f32[N, 3, 5, 4]
      input y: i32[N]
      c1 = conv2d(x, filters: 4, kernel: 3, padding: 1)
      g1 = gelu(c1)
      p = global_avgpool(g1)
      c2 = conv2d(p, filters: 4, kernel: 1)
      a1 = add(g1, c2)
      a2 = add(c2, a1)
      s = gelu(a2)
      f = flatten(s)
      o = dense(f, units: 3)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """),
    ("v1.3-chunk-and-channel-shuffle", """
      input x: f32[N, 4, 5, 4]
      input y: i32[N]
      c1 = conv2d(x, filters: 6, kernel: 3, padding: 1)
      a = chunk(c1, chunks: 2, index: 0)
      b = chunk(c1, chunks: 2, index: 1)
      t = tanh(b)
      j = concat(a, t)
      s = channel_shuffle(j, groups: 2)
      c2 = conv2d(s, filters: 3, kernel: 3, stride: 2)
      s3 = channel_shuffle(c2, groups: 3)
      f = flatten(s3)
      o = dense(f, units: 3)
      loss = cross_entropy(o, y)
      output o
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
    // The check itself must be able to fail: perturb one parameter's analytic gradient everywhere.
    let check = try GradCheck(source: Self.graphs[2].1, batch: 2)
    var g = try check.symbolicGradients()
    g["a.weight"]!.data = g["a.weight"]!.data.map { $0 + 0.01 }
    let (error, _) = try check.maxError(gradients: g)
    #expect(error > 1e-3, "a gradient off by 0.01 went unnoticed (worst error \(error))")
  }

  @Test(arguments: [Double.nan, .infinity, -.infinity]) func aNonFiniteGradientIsCaught(_ bad: Double) throws {
    // One NaN or infinite element must fail the check, wherever the samples fall: every element is bad here.
    let check = try GradCheck(source: Self.graphs[2].1, batch: 2)
    var g = try check.symbolicGradients()
    g["a.weight"]!.data = g["a.weight"]!.data.map { _ in bad }
    let (error, _) = try check.maxError(gradients: g)
    #expect(error == .infinity, "a gradient of \(bad) gave worst error \(error)")
  }

  @Test func aMissingGradientIsAnError() throws {
    let check = try GradCheck(source: Self.graphs[2].1, batch: 2)
    var g = try check.symbolicGradients()
    g["b.bias"] = nil
    #expect(throws: GradCheck.MissingGradient.self) { try check.maxError(gradients: g) }
  }
}
