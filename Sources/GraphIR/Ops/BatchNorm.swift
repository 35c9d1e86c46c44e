/// Attributes of `batchnorm` and its gradient ops.
public struct BatchNormAttrs: Equatable, Hashable, Sendable {
  /// Weight of the batch in the running statistics' moving average (PyTorch's `momentum`).
  public var momentum: Double
  /// Added to the variance before its square root.
  public var eps: Double
  /// Whether the op has a learnable scale (`weight`) and shift (`bias`).
  public var affine: Bool
  public init(momentum: Double = BatchNormAttrs.defaultMomentum, eps: Double = BatchNormAttrs.defaultEps, affine: Bool = true) {
    self.momentum = momentum
    self.eps = eps
    self.affine = affine
  }
  /// The spec's (and `nn.BatchNorm2d`'s) defaults.
  public static let defaultMomentum = 0.1, defaultEps = 1e-5

  static let syntax = [AttrSpec("momentum", .float), AttrSpec("eps", .float), AttrSpec("affine", .bool)]
  init(_ a: Attributes) throws(AttrError) {
    self.init(momentum: try a.float("momentum", in: 0...1, default: Self.defaultMomentum, rule: "0 <= momentum <= 1"),
              eps: try a.float("eps", in: Double.leastNonzeroMagnitude..., default: Self.defaultEps, rule: "eps > 0"),
              affine: a.bool("affine"))
  }
  var printed: [(String, String)] {
    var r: [(String, String)] = []
    if momentum != Self.defaultMomentum { r.append(("momentum", formatFloat(momentum))) }
    if eps != Self.defaultEps { r.append(("eps", formatFloat(eps))) }
    if !affine { r.append(("affine", "false")) }
    return r
  }
}

/// `batchnorm(x, momentum, eps, affine)` over the channels (axis 1) of [N, C, H, W] or [N, C], like
/// `nn.BatchNorm2d` / `nn.BatchNorm1d`. Training normalises with the batch's mean and biased variance (also
/// defined as `NAME.mean` and `NAME.var`, which the gradient reads and the runtime folds into the running
/// statistics); inference normalises with the buffers `running_mean` and `running_var`.
public struct BatchNormOp: StatefulOp {
  /// BatchNormalization with the running statistics; ONNX's momentum weighs the running value, PyTorch's (and
  /// cnnc's) the batch; ONNX's op always scales and shifts, by 1 and 0 without affine parameters.
  public var onnx: ONNXForm {
    let scale: ONNXInput = attrs.affine ? .parameter("weight") : .filled("weight", value: 1, like: "running_mean")
    let shift: ONNXInput = attrs.affine ? .parameter("bias") : .filled("bias", value: 0, like: "running_mean")
    return .node("BatchNormalization", inputs: [.operand(0), scale, shift, .parameter("running_mean"), .parameter("running_var")],
                 attributes: [ONNXAttribute("epsilon", .float(attrs.eps)), ONNXAttribute("momentum", .float(1 - attrs.momentum))])
  }
  /// Inference-mode BatchNormalization with constant scale, shift, mean and variance.
  public static let onnxReading = ONNXReading.node(["BatchNormalization"]) { n in
    guard (n.int("training_mode") ?? 0) == 0, n.outputCount == 1 else { throw n.fail("a training-mode batch norm (running statistics as outputs) is not supported") }
    guard n.inputCount == 5 else { throw n.fail("expects X, scale, B, mean and var") }
    let parts = try (1...4).map { i in try n.constant(i, rank: 1, "input \(i + 1) must be a 1-D initializer") }
    guard Set(parts.map(\.shape)).count == 1 else { throw n.fail("scale, B, mean and var differ in length") }
    // ONNX's momentum weighs the running value; PyTorch's (and cnnc's) weighs the batch. Values within rounding
    // of the defaults are the defaults (a float32 attribute cannot hold 0.9 exactly).
    let momentum = 1 - Double(try n.finite("momentum", default: 0.9, "in [0, 1]") { $0 >= 0 && $0 <= 1 })
    let eps = Double(try n.finite("epsilon", default: 1e-5, "a positive number") { $0 > 0 })
    let attrs = BatchNormAttrs(momentum: abs(momentum - BatchNormAttrs.defaultMomentum) > 1e-6 ? Double(Float(momentum)) : BatchNormAttrs.defaultMomentum,
                               eps: abs(eps - BatchNormAttrs.defaultEps) > 1e-9 ? eps : BatchNormAttrs.defaultEps)
    return ONNXRead(.batchNorm(attrs), tensors: Array(zip(["weight", "bias", "running_mean", "running_var"], parts)).map { ($0, $1) }, namedBy: 1)
  }
  public var attrs: BatchNormAttrs
  public init(_ attrs: BatchNormAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("batchnorm", operands: ["x"], attrs: BatchNormAttrs.syntax) { a throws(AttrError) in
    .batchNorm(try BatchNormAttrs(a))
  }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public var parameterSuffixes: [String] { attrs.affine ? ["weight", "bias"] : [] }
  public var bufferSuffixes: [String] { ["running_mean", "running_var"] }
  public func bufferDomain(_ suffix: String) -> BufferDomain { suffix == "running_var" ? .nonNegative : .finite }
  public var counterSuffixes: [String] { ["num_batches_tracked"] }
  public var secondaryOutputs: [String] { ["mean", "var"] }
  public func elementsPerStatistic(_ x: [TensorType]) -> Int { BatchNorm.elementsPerChannel(x[0].dims) }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try BatchNorm.checkInput(spelling, x[0]) }
  public func parameterTypes(_ x: [TensorType]) -> [TensorType] { attrs.affine ? [BatchNorm.channels(x[0]), BatchNorm.channels(x[0])] : [] }
  public func bufferTypes(_ x: [TensorType]) -> [TensorType] { [BatchNorm.channels(x[0]), BatchNorm.channels(x[0])] }
  public func secondaryTypes(_ x: [TensorType], result: TensorType) -> [TensorType] { [BatchNorm.channels(x[0]), BatchNorm.channels(x[0])] }
  /// PyTorch's initialisation: scale 1, shift 0, running mean 0, running variance 1.
  public func initialValue(_ suffix: String) -> Float? {
    switch suffix {
    case "weight", "running_var": 1
    default: 0
    }
  }

  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    let x = node.args[0], stats = ["\(node.name).mean", "\(node.name).var"]
    guard attrs.affine else {
      return [wants[0] ? b.emit("\(x)_grad", .batchNormGradInputUnscaled(attrs), [dy, x] + stats) : nil]
    }
    // The bias and weight gradients are sum(dy) and sum(dy * xhat), which the input gradient reads too.
    let dw = b.parameterGradient("\(node.name).weight", .batchNormGradWeight(attrs), [dy, x] + stats)
    let db = b.parameterGradient("\(node.name).bias", .batchNormGradBias, [dy])
    guard wants[0] else { return [nil] }
    return [b.emit("\(x)_grad", .batchNormGradInput(attrs), [dy, x] + stats + ["\(node.name).weight", db, dw])]
  }

  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let input = try x.f32(0)
    let (gamma, beta) = (try x.f32(1, if: attrs.affine), try x.f32(2, if: attrs.affine))
    let buffers = attrs.affine ? 3 : 1
    guard ctx.training else {
      return [BatchNorm.normalize(input, mean: try x.f32(buffers), variance: try x.f32(buffers + 1), eps: attrs.eps, gamma: gamma, beta: beta)]
    }
    guard BatchNorm.elementsPerChannel(input.shape) > 1 else {
      throw EvaluationError("\(x.node.name): batchnorm needs more than one value per channel in training, got input \(input.shape)")
    }
    let (mean, variance) = BatchNorm.statistics(input)
    return [BatchNorm.normalize(input, mean: mean, variance: variance, eps: attrs.eps, gamma: gamma, beta: beta), mean, variance]
  }

  /// The running statistics after a step whose S shards of M elements per channel gave the batch means
  /// and biased variances in `shardStatistics` (shard order): the whole batch's mean and unbiased variance
  /// (combined exactly from the shards', in Double), folded in with `momentum` as PyTorch does.
  public func updatedBuffers(_ buffers: [[Float]], shardStatistics: [[[Float]]], elementsPerShard m: Int) -> [[Float]] {
    let (running, runningVar) = (buffers[0], buffers[1])
    let shards = Double(shardStatistics.count), n = shards * Double(m)
    let momentum = attrs.momentum
    var newMean = running, newVar = runningVar
    for c in 0..<running.count {
      let mean = shardStatistics.reduce(0.0) { $0 + Double($1[0][c]) } / shards
      let biased = shardStatistics.reduce(0.0) { s, stats in
        let d = Double(stats[0][c]) - mean
        return s + Double(stats[1][c]) + d * d
      } / shards
      let unbiased = n > 1 ? biased * n / (n - 1) : biased
      newMean[c] = Float((1 - momentum) * Double(running[c]) + momentum * mean)
      newVar[c] = Float((1 - momentum) * Double(runningVar[c]) + momentum * unbiased)
    }
    return [newMean, newVar]
  }
}

/// `batchnorm_grad_input(dy, x, mean, var, weight, sum_dy, sum_dy_xhat)`: the gradient w.r.t. the input of an
/// affine batchnorm in training, through the batch statistics: gamma * invstd * (dy - mean(dy) - xhat *
/// mean(dy * xhat)), the sums per channel given (they are the bias and weight gradients).
public struct BatchNormGradInputOp: BackwardOp {
  public var attrs: BatchNormAttrs
  public init(_ attrs: BatchNormAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("batchnorm_grad_input", operands: ["dy", "x", "mean", "var", "weight", "sum_dy", "sum_dy_xhat"],
                                      attrs: BatchNormAttrs.syntax) {
    a throws(AttrError) in .batchNormGradInput(try BatchNormAttrs(a))
  }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try BatchNorm.gradType(spelling, x, channelOperands: 2...6) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [BatchNorm.backwardInput(dy: try x.f32(0), x: try x.f32(1), mean: try x.f32(2), variance: try x.f32(3), eps: attrs.eps, gamma: try x.f32(4),
                             sums: (try x.f32(5), try x.f32(6)))]
  }
}

/// `batchnorm_grad_input_unscaled(dy, x, mean, var)`: the same for a batchnorm without weight (`affine: false`).
public struct BatchNormGradInputUnscaledOp: BackwardOp {
  public var attrs: BatchNormAttrs
  public init(_ attrs: BatchNormAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("batchnorm_grad_input_unscaled", operands: ["dy", "x", "mean", "var"], attrs: BatchNormAttrs.syntax) {
    a throws(AttrError) in .batchNormGradInputUnscaled(try BatchNormAttrs(a))
  }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try BatchNorm.gradType(spelling, x, channelOperands: 2...3) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [BatchNorm.backwardInput(dy: try x.f32(0), x: try x.f32(1), mean: try x.f32(2), variance: try x.f32(3), eps: attrs.eps, gamma: nil)]
  }
}

/// `batchnorm_grad_weight(dy, x, mean, var)`: the sum of dy * xhat over every axis but C.
public struct BatchNormGradWeightOp: BackwardOp {
  public var attrs: BatchNormAttrs
  public init(_ attrs: BatchNormAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("batchnorm_grad_weight", operands: ["dy", "x", "mean", "var"], attrs: BatchNormAttrs.syntax) {
    a throws(AttrError) in .batchNormGradWeight(try BatchNormAttrs(a))
  }
  public var printedAttributes: [(String, String)] { attrs.printed }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType {
    BatchNorm.channels(try BatchNorm.gradType(spelling, x, channelOperands: 2...3))
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [BatchNorm.backwardWeight(dy: try x.f32(0), x: try x.f32(1), mean: try x.f32(2), variance: try x.f32(3), eps: attrs.eps)]
  }
}

/// `batchnorm_grad_bias(dy)`: the sum of dy over every axis but C.
public struct BatchNormGradBiasOp: BackwardOp {
  public init() {}
  public static let syntax = OpSyntax("batchnorm_grad_bias", operands: ["dy"]) { _ in .batchNormGradBias }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { BatchNorm.channels(try BatchNorm.checkInput(spelling, x[0])) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let dy = try x.f32(0)
    var db = Tensor<T>(zeros: [dy.shape[1]])
    BatchNorm.forEachChannel(dy.shape) { c, indices in
      var s: T = 0
      for i in indices { s += dy.data[i] }
      db.data[c] = s
    }
    return [db]
  }
}

/// Batch normalisation's shape rules and reference arithmetic. Per channel, elements are visited in the
/// order n, then h and w, and every sum runs in that order: the lowering's order.
public enum BatchNorm {
  /// x must be f32 [N, C, H, W] or [N, C].
  static func checkInput(_ op: String, _ x: TensorType, operand: Int = 0) throws(ShapeError) -> TensorType {
    guard x.dtype == .f32, x.dims.count == 4 || x.dims.count == 2 else {
      throw ShapeError("\(op) expects an f32 tensor [N, C, H, W] or [N, C], got \(x) (rank \(x.dims.count))", operand: operand)
    }
    return x
  }

  /// The [C] type of per-channel values.
  static func channels(_ x: TensorType) -> TensorType { TensorType(.f32, [x.dims.count > 1 ? x.dims[1] : 1]) }

  /// The gradient ops' rule: dy and x of one type, and [C] operands at `channelOperands`.
  static func gradType(_ op: String, _ x: [TensorType], channelOperands: ClosedRange<Int>) throws(ShapeError) -> TensorType {
    let t = try checkInput(op, x[1], operand: 1)
    guard x[0] == t else { throw ShapeError("\(op): dy \(x[0]) does not match x \(t)") }
    for i in channelOperands where x[i] != channels(t) {
      throw ShapeError("\(op): operand \(i + 1) must be \(channels(t)) (one value per channel of \(t)), got \(x[i])", operand: i)
    }
    return t
  }

  /// Elements each channel's statistics are taken over: N x H x W.
  public static func elementsPerChannel(_ shape: [Int]) -> Int { shape.count > 1 ? shape.reduce(1, *) / shape[1] : shape.reduce(1, *) }

  /// Calls `body(c, indices)` for each channel with the flat indices of its elements in n, h, w order.
  static func forEachChannel(_ shape: [Int], _ body: (Int, [Int]) -> Void) {
    let (n, c) = (shape[0], shape[1]), plane = shape.dropFirst(2).reduce(1, *)
    for ch in 0..<c {
      var indices: [Int] = []
      indices.reserveCapacity(n * plane)
      for b in 0..<n {
        let start: Int = (b * c + ch) * plane
        indices += start..<(start + plane)
      }
      body(ch, indices)
    }
  }

  /// The mean and biased variance of each channel (two passes: the variance sums squared deviations).
  static func statistics<T: Real>(_ x: Tensor<T>) -> (Tensor<T>, Tensor<T>) {
    var mean = Tensor<T>(zeros: [x.shape[1]]), variance = Tensor<T>(zeros: [x.shape[1]])
    let m = T(elementsPerChannel(x.shape))
    forEachChannel(x.shape) { c, indices in
      var s: T = 0
      for i in indices { s += x.data[i] }
      let mu = s / m
      var q: T = 0
      for i in indices { q += (x.data[i] - mu) * (x.data[i] - mu) }
      mean.data[c] = mu
      variance.data[c] = q / m
    }
    return (mean, variance)
  }

  /// 1 / sqrt(var + eps).
  static func inverseStd<T: Real>(_ variance: T, eps: Double) -> T { 1 / (variance + T(eps)).squareRoot() }

  /// (x - mean) * (gamma * invstd) + beta, per channel.
  static func normalize<T: Real>(_ x: Tensor<T>, mean: Tensor<T>, variance: Tensor<T>, eps: Double, gamma: Tensor<T>?, beta: Tensor<T>?) -> Tensor<T> {
    var y = x
    forEachChannel(x.shape) { c, indices in
      let scale = (gamma?.data[c] ?? 1) * inverseStd(variance.data[c], eps: eps), shift = beta?.data[c] ?? 0
      for i in indices { y.data[i] = (x.data[i] - mean.data[c]) * scale + shift }
    }
    return y
  }

  /// Per channel, sum(dy) and sum(dy * xhat).
  static func gradientSums<T: Real>(dy: Tensor<T>, x: Tensor<T>, indices: [Int], mean: T, invstd: T) -> (T, T) {
    var (s, sx): (T, T) = (0, 0)
    for i in indices {
      s += dy.data[i]
      sx += dy.data[i] * ((x.data[i] - mean) * invstd)
    }
    return (s, sx)
  }

  /// `sums`: sum(dy) and sum(dy * xhat) per channel when already computed (computed here when nil).
  static func backwardInput<T: Real>(dy: Tensor<T>, x: Tensor<T>, mean: Tensor<T>, variance: Tensor<T>, eps: Double, gamma: Tensor<T>?,
                                     sums: (Tensor<T>, Tensor<T>)? = nil) -> Tensor<T> {
    var dx = x
    let m = T(elementsPerChannel(x.shape))
    forEachChannel(x.shape) { c, indices in
      let invstd = inverseStd(variance.data[c], eps: eps)
      let (s, sx) = sums.map { ($0.0.data[c], $0.1.data[c]) } ?? gradientSums(dy: dy, x: x, indices: indices, mean: mean.data[c], invstd: invstd)
      let scale = (gamma?.data[c] ?? 1) * invstd, meanDy = s / m, meanDyX = sx / m
      for i in indices { dx.data[i] = scale * (dy.data[i] - meanDy - (x.data[i] - mean.data[c]) * invstd * meanDyX) }
    }
    return dx
  }

  static func backwardWeight<T: Real>(dy: Tensor<T>, x: Tensor<T>, mean: Tensor<T>, variance: Tensor<T>, eps: Double) -> Tensor<T> {
    var dw = Tensor<T>(zeros: [x.shape[1]])
    forEachChannel(x.shape) { c, indices in
      dw.data[c] = gradientSums(dy: dy, x: x, indices: indices, mean: mean.data[c], invstd: inverseStd(variance.data[c], eps: eps)).1
    }
    return dw
  }
}

/// Attributes of `batchnorm_fold`: the batch norm's own, and its channel count (the op has no operand to
/// read it from).
public struct BatchNormFoldAttrs: Equatable, Hashable, Sendable {
  public var channels: Int
  public var norm: BatchNormAttrs
  public init(channels: Int, norm: BatchNormAttrs) {
    self.channels = channels
    self.norm = norm
  }
}

/// `batchnorm_fold(channels)`: an inference batch norm as the per-channel scale gamma / sqrt(running_var + eps)
/// (row 0) and shift beta - running_mean * scale (row 1) of a [2, C] value, which the conv2d or dense before
/// it applies in its epilogue (`scaled: true`), so the normalisation costs no pass of its own and the conv
/// fuses with the relu and pool after it. It takes the batch norm's name, parameters and buffers, so the
/// state keeps its `state_dict` names. Formed by `foldBatchNorm` in inference programs only.
public struct BatchNormFoldOp: FusedOp {
  public var attrs: BatchNormFoldAttrs
  public init(_ attrs: BatchNormFoldAttrs) { self.attrs = attrs }
  public static let syntax = OpSyntax("batchnorm_fold", operands: [],
                                      attrs: [AttrSpec("channels", .int, required: true)] + BatchNormAttrs.syntax) { a throws(AttrError) in
    .batchNormFold(BatchNormFoldAttrs(channels: try a.int("channels", min: 1), norm: try BatchNormAttrs(a)))
  }
  public static let replaces = "a conv2d or dense followed by batchnorm"
  var norm: BatchNormOp { BatchNormOp(attrs.norm) }
  public var printedAttributes: [(String, String)] { [("channels", "\(attrs.channels)")] + attrs.norm.printed }
  public var parameterSuffixes: [String] { norm.parameterSuffixes }
  public var bufferSuffixes: [String] { norm.bufferSuffixes }
  public func bufferDomain(_ suffix: String) -> BufferDomain { norm.bufferDomain(suffix) }
  public func initialValue(_ suffix: String) -> Float? { norm.initialValue(suffix) }
  var perChannel: TensorType { TensorType(.f32, [attrs.channels]) }
  public func parameterTypes(_ x: [TensorType]) -> [TensorType] { parameterSuffixes.map { _ in perChannel } }
  public func bufferTypes(_ x: [TensorType]) -> [TensorType] { bufferSuffixes.map { _ in perChannel } }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { TensorType(.f32, [2, attrs.channels]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let affine = attrs.norm.affine, buffers = affine ? 2 : 0
    let (gamma, beta) = (try x.f32(0, if: affine), try x.f32(1, if: affine))
    let (mean, variance) = (try x.f32(buffers), try x.f32(buffers + 1))
    var folded = Tensor<T>(zeros: [2, attrs.channels])
    for c in 0..<attrs.channels {
      let scale = (gamma?.data[c] ?? 1) * BatchNorm.inverseStd(variance.data[c], eps: attrs.norm.eps)
      folded.data[c] = scale
      folded.data[attrs.channels + c] = (beta?.data[c] ?? 0) - mean.data[c] * scale
    }
    return [folded]
  }
}

extension BatchNorm {
  /// y * scale + shift per channel (axis 1), the rows of a `batchnorm_fold` value.
  static func applyFold<T: Real>(_ folded: Tensor<T>, to y: Tensor<T>) -> Tensor<T> {
    var out = y
    let c = y.shape[1]
    forEachChannel(y.shape) { ch, indices in
      for i in indices { out.data[i] = y.data[i] * folded.data[ch] + folded.data[c + ch] }
    }
    return out
  }

  /// The rule of a scaled conv or dense: its second operand is [2, C] for its C output channels.
  static func checkFold(_ op: String, _ x: [TensorType], channels: Int, scaled: Bool) throws(ShapeError) {
    guard scaled else { return }
    let want = TensorType(.f32, [2, channels])
    guard x[1] == want else { throw ShapeError("\(op): the folded batch norm operand must be \(want), got \(x[1])", operand: 1) }
  }
}
