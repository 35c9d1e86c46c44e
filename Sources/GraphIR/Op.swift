/// Attributes of `conv2d` and its gradient ops.
public struct Conv2DAttrs: Equatable, Hashable, Sendable {
  public var filters: Int
  public var kernel: Int
  public var stride = 1
  public var padding = 0
  public var bias = true
  /// Channel groups: each filter reads the input channels of its group only (`groups` = channels = filters is
  /// a depthwise conv); the weight is [filters, channels / groups, kernel, kernel].
  public var groups = 1
  /// The spacing of the kernel's taps (1: adjacent).
  public var dilation = 1
  /// Whether a second operand, a `batchnorm_fold` value [2, filters], scales and shifts each filter's
  /// output (after the bias, before any relu or pool): set only by `foldBatchNorm` in inference programs.
  public var scaled = false
  /// An int8 conv (`Int8Arithmetic`): its input quantized to u8 with this scale and zero point, its weights to s8 per
  /// filter, the products summed in integers. Inference only; set by `cnnc quantize` or read from ONNX.
  public var quantization: Quantization? = nil
  public init(filters: Int, kernel: Int, stride: Int = 1, padding: Int = 0, bias: Bool = true, groups: Int = 1, dilation: Int = 1,
              scaled: Bool = false, quantization: Quantization? = nil) {
    self.filters = filters
    self.kernel = kernel
    self.stride = stride
    self.padding = padding
    self.bias = bias
    self.groups = groups
    self.dilation = dilation
    self.scaled = scaled
    self.quantization = quantization
  }

  /// The input extent the kernel spans: (kernel - 1) * dilation + 1.
  public var extent: Int { (kernel - 1) * dilation + 1 }
  /// Whether the conv is grouped or dilated, which the direct kernels compute (im2col and Winograd take dense,
  /// undilated convs).
  public var isDirect: Bool { groups != 1 || dilation != 1 }
}

/// Attributes of `maxpool`, `avgpool` and their gradients, with PyTorch's semantics: `stride` defaults to
/// `size`; `padding` pads each side (with -inf for max, counted or not in an average as `countIncludePad`
/// says); `ceilMode` rounds the output size up, keeping only windows that start inside the input or the
/// leading padding.
public struct PoolAttrs: Equatable, Hashable, Sendable {
  public var size: Int
  public var stride: Int
  public var padding = 0
  public var ceilMode = false
  /// Whether an average divides by the whole window, padding included (PyTorch's default), or only by the
  /// input elements it covers.
  public var countIncludePad = true
  public init(size: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false, countIncludePad: Bool = true) {
    self.size = size
    self.stride = stride ?? size
    self.padding = padding
    self.ceilMode = ceilMode
    self.countIncludePad = countIncludePad
  }

  /// Whether every window lies inside the input (no padding, rounding down): the fast, fusable form.
  public var isPlain: Bool { padding == 0 && !ceilMode }

  /// The number of windows along an axis of `n` elements.
  public func outputSize(_ n: Int) -> Int {
    let span = n + 2 * padding - size
    var out = (ceilMode ? (span + stride - 1) / stride : span / stride) + 1
    // A last window that would start in the trailing padding is dropped (PyTorch's rule).
    if ceilMode, (out - 1) * stride >= n + padding { out -= 1 }
    return out
  }

  /// Window `o` along an axis of `n` elements: the input range it covers and the element count its average
  /// divides by.
  public func window(_ o: Int, _ n: Int) -> (range: Range<Int>, divisor: Int) {
    let start = o * stride - padding, end = min(start + size, n + padding)
    let range = max(start, 0)..<min(end, n)
    return (range, countIncludePad ? end - start : range.count)
  }
}

/// Attributes of `dense` and its gradient ops.
public struct DenseAttrs: Equatable, Hashable, Sendable {
  public var units: Int
  public var bias = true
  /// Whether a second operand [2, units] scales and shifts each unit's output, as `Conv2DAttrs.scaled`.
  public var scaled = false
  /// An int8 dense layer, as `Conv2DAttrs.quantization` (each unit's weights a filter's).
  public var quantization: Quantization? = nil
  public init(units: Int, bias: Bool = true, scaled: Bool = false, quantization: Quantization? = nil) {
    self.units = units
    self.bias = bias
    self.scaled = scaled
    self.quantization = quantization
  }
}

/// Attributes of `relu_maxpool_grad`: the pool window and the spatial size of the conv output.
public struct UnpoolAttrs: Equatable, Hashable, Sendable {
  public var pool: PoolAttrs
  public var height: Int
  public var width: Int
  public init(pool: PoolAttrs, height: Int, width: Int) {
    self.pool = pool
    self.height = height
    self.width = width
  }
}

/// Attributes of `dropout` and `dropout_grad`.
public struct DropoutAttrs: Equatable, Hashable, Sendable {
  public var rate: Double
  public init(rate: Double) { self.rate = rate }
}

/// Every operation of the IR: the spec's ops, then the gradient ops that `differentiate` emits.
public enum Op: Equatable, Hashable, Sendable {
  case conv2d(Conv2DAttrs)
  case relu
  case maxPool(PoolAttrs)
  case avgPool(PoolAttrs)
  case flatten
  case dense(DenseAttrs)
  case dropout(DropoutAttrs)
  case softmax
  case crossEntropy
  // Version 1.1 of the format.
  case leakyReLU(slope: Double)
  case sigmoid
  case tanh
  case globalAvgPool
  case batchNorm(BatchNormAttrs)
  // Version 1.3 of the format.
  case clip(min: Double, max: Double)
  case hardSigmoid
  case hardSwish
  case silu
  case gelu
  /// (x1, x2, ...): joined along the channels.
  case concat(count: Int)
  case mul
  case chunk(chunks: Int, index: Int)
  case channelShuffle(groups: Int)

  /// (dy, weight, x): gradient w.r.t. the conv input; x gives only the shape.
  case conv2dGradInput(Conv2DAttrs)
  /// (dy, x): gradient w.r.t. the conv weight.
  case conv2dGradWeight(Conv2DAttrs)
  /// (dy): gradient w.r.t. the conv bias.
  case conv2dGradBias
  /// (dy, y): dy where the relu output is positive.
  case reluGrad
  /// (dy, x): routes dy to the first maximum of each window.
  case maxPoolGrad(PoolAttrs)
  /// (dy, x): spreads dy evenly over each window; x gives only the shape.
  case avgPoolGrad(PoolAttrs)
  /// (dy, x): reshapes dy back to x's shape.
  case flattenGrad
  /// (dy, weight)
  case denseGradInput
  /// (dy, x)
  case denseGradWeight
  /// (dy)
  case denseGradBias
  /// (dy, y): reapplies the mask of the dropout that produced y (same RNG key).
  case dropoutGrad(DropoutAttrs)
  /// (dy, y)
  case softmaxGrad
  /// (logits, labels): gradient of the mean cross-entropy w.r.t. the logits, seeded with 1.
  case crossEntropyGrad
  /// (a, b): elementwise sum; accumulates the gradients of a value with several consumers.
  case add
  /// (dy, x)
  case leakyReLUGrad(slope: Double)
  /// (dy, y)
  case sigmoidGrad
  /// (dy, y)
  case tanhGrad
  /// (dy, x): x gives only the shape.
  case globalAvgPoolGrad
  /// (dy, x)
  case clipGrad(min: Double, max: Double)
  /// (dy, x)
  case hardSigmoidGrad
  /// (dy, x)
  case hardSwishGrad
  /// (dy, x)
  case siluGrad
  case geluGrad
  /// (dy, x1, x2, ...): the channels of dy that operand `part` gave; the operands give only their shapes.
  case concatGrad(part: Int)
  /// (dy, other, x): dy times the other operand of a `mul`, summed over each plane when x is a gate.
  case mulGrad
  case addGrad
  /// (dy, x): dy in its chunk's channels, zeros elsewhere; x gives only the shape.
  case chunkGrad(chunks: Int, index: Int)
  /// (dy): the inverse channel permutation.
  case channelShuffleGrad(groups: Int)
  /// (dy, x, mean, var, weight): gradient w.r.t. a batchnorm's input, through the batch statistics.
  case batchNormGradInput(BatchNormAttrs)
  /// (dy, x, mean, var): the same without a weight (`affine: false`).
  case batchNormGradInputUnscaled(BatchNormAttrs)
  /// (dy, x, mean, var): gradient w.r.t. a batchnorm's weight.
  case batchNormGradWeight(BatchNormAttrs)
  /// (dy): gradient w.r.t. a batchnorm's bias.
  case batchNormGradBias

  // Fused ops, produced by `fuseConvReLUPool` after differentiation (see Ops/Fused.swift).
  /// (x): relu(conv2d(x)).
  case conv2dReLU(Conv2DAttrs)
  /// (x): maxpool(relu(conv2d(x))); also defines `NAME.argmax`, the window position of each maximum.
  case conv2dReLUMaxPool(Conv2DAttrs, PoolAttrs)
  /// (x[, scale][, residual]): act(conv2d(x) + residual), activation and residual each optional.
  indirect case conv2dAct(Conv2DAttrs, activation: Op?, residual: Bool)
  /// (x): relu(dense(x)).
  case denseReLU(DenseAttrs)
  /// (dy, y, y.argmax): maxpool_grad and relu_grad in one pass, reading the saved argmax.
  case reluMaxPoolGrad(UnpoolAttrs)
  /// (): an inference batch norm's per-channel scale and shift, which the conv or dense before it applies.
  case batchNormFold(BatchNormFoldAttrs)

  /// The op's definition: the one switch over ops, from which everything else about an op is read.
  public var definition: any OpDefinition {
    switch self {
    case .conv2d(let a): Conv2DOp(a)
    case .relu: ReLUOp()
    case .maxPool(let a): MaxPoolOp(a)
    case .avgPool(let a): AvgPoolOp(a)
    case .flatten: FlattenOp()
    case .dense(let a): DenseOp(a)
    case .dropout(let a): DropoutOp(a)
    case .softmax: SoftmaxOp()
    case .crossEntropy: CrossEntropyOp()
    case .add: AddOp()
    case .leakyReLU(let slope): LeakyReLUOp(slope: slope)
    case .sigmoid: SigmoidOp()
    case .tanh: TanhOp()
    case .globalAvgPool: GlobalAvgPoolOp()
    case .batchNorm(let a): BatchNormOp(a)
    case .clip(let lo, let hi): ClipOp(min: lo, max: hi)
    case .hardSigmoid: HardSigmoidOp()
    case .hardSwish: HardSwishOp()
    case .silu: SiLUOp()
    case .gelu: GELUOp()
    case .concat(let count): ConcatOp(count: count)
    case .mul: MulOp()
    case .concatGrad(let part): ConcatGradOp(part: part)
    case .mulGrad: MulGradOp()
    case .addGrad: AddGradOp()
    case .chunk(let chunks, let index): ChunkOp(chunks: chunks, index: index)
    case .channelShuffle(let groups): ChannelShuffleOp(groups: groups)
    case .chunkGrad(let chunks, let index): ChunkGradOp(chunks: chunks, index: index)
    case .channelShuffleGrad(let groups): ChannelShuffleGradOp(groups: groups)
    case .clipGrad(let lo, let hi): ClipGradOp(min: lo, max: hi)
    case .hardSigmoidGrad: HardSigmoidGradOp()
    case .hardSwishGrad: HardSwishGradOp()
    case .siluGrad: SiLUGradOp()
    case .geluGrad: GELUGradOp()
    case .batchNormGradInput(let a): BatchNormGradInputOp(a)
    case .batchNormGradInputUnscaled(let a): BatchNormGradInputUnscaledOp(a)
    case .batchNormGradWeight(let a): BatchNormGradWeightOp(a)
    case .batchNormGradBias: BatchNormGradBiasOp()
    case .leakyReLUGrad(let slope): LeakyReLUGradOp(slope: slope)
    case .sigmoidGrad: SigmoidGradOp()
    case .tanhGrad: TanhGradOp()
    case .globalAvgPoolGrad: GlobalAvgPoolGradOp()
    case .conv2dGradInput(let a): Conv2DGradInputOp(a)
    case .conv2dGradWeight(let a): Conv2DGradWeightOp(a)
    case .conv2dGradBias: Conv2DGradBiasOp()
    case .reluGrad: ReLUGradOp()
    case .maxPoolGrad(let a): MaxPoolGradOp(a)
    case .avgPoolGrad(let a): AvgPoolGradOp(a)
    case .flattenGrad: FlattenGradOp()
    case .denseGradInput: DenseGradInputOp()
    case .denseGradWeight: DenseGradWeightOp()
    case .denseGradBias: DenseGradBiasOp()
    case .dropoutGrad(let a): DropoutGradOp(a)
    case .softmaxGrad: SoftmaxGradOp()
    case .crossEntropyGrad: CrossEntropyGradOp()
    case .conv2dReLU(let a): Conv2DReLUOp(a)
    case .conv2dReLUMaxPool(let a, let p): Conv2DReLUMaxPoolOp(a, p)
    case .conv2dAct(let a, let act, let residual): Conv2DActOp(a, activation: act, residual: residual)
    case .denseReLU(let a): DenseReLUOp(a)
    case .reluMaxPoolGrad(let a): ReLUMaxPoolGradOp(a)
    case .batchNormFold(let a): BatchNormFoldOp(a)
    }
  }

  /// Every op's definition type, in the order `.graph` syntax lists them (forward, backward, fused).
  public static let definitions: [any OpDefinition.Type] = [
    Conv2DOp.self, ReLUOp.self, MaxPoolOp.self, AvgPoolOp.self, FlattenOp.self, DenseOp.self, DropoutOp.self,
    SoftmaxOp.self, CrossEntropyOp.self, AddOp.self, GlobalAvgPoolOp.self, LeakyReLUOp.self, SigmoidOp.self, TanhOp.self,
    BatchNormOp.self, ClipOp.self, HardSigmoidOp.self, HardSwishOp.self, SiLUOp.self, GELUOp.self, ConcatOp.self, MulOp.self, ChunkOp.self, ChannelShuffleOp.self, Conv2DGradInputOp.self, Conv2DGradWeightOp.self, Conv2DGradBiasOp.self, ReLUGradOp.self, MaxPoolGradOp.self,
    AvgPoolGradOp.self, FlattenGradOp.self, DenseGradInputOp.self, DenseGradWeightOp.self, DenseGradBiasOp.self,
    DropoutGradOp.self, SoftmaxGradOp.self, CrossEntropyGradOp.self, GlobalAvgPoolGradOp.self, LeakyReLUGradOp.self,
    SigmoidGradOp.self, TanhGradOp.self, BatchNormGradInputOp.self, BatchNormGradInputUnscaledOp.self, BatchNormGradWeightOp.self,
    BatchNormGradBiasOp.self, ClipGradOp.self, HardSigmoidGradOp.self, HardSwishGradOp.self, SiLUGradOp.self, GELUGradOp.self, ConcatGradOp.self, MulGradOp.self, AddGradOp.self, ChunkGradOp.self, ChannelShuffleGradOp.self,
    Conv2DReLUOp.self, Conv2DReLUMaxPoolOp.self, Conv2DActOp.self, DenseReLUOp.self, ReLUMaxPoolGradOp.self, BatchNormFoldOp.self,
  ]

  /// The op's name as written in `.graph` files.
  public var spelling: String { definition.spelling }
  /// Number of positional operands.
  public var arity: Int { definition.operandNames.count }
  /// The positional operands' names, as diagnostics list them.
  public var operandNames: [String] { definition.operandNames }
  /// Whether the op is in a form only the compiler writes (a conv or dense given a folded batch norm).
  public var isCompilerForm: Bool { definition.isCompilerForm }
  /// Learnable parameters the op owns, as `state_dict` suffixes.
  public var parameterSuffixes: [String] { definition.parameterSuffixes }
  /// Non-learnable state the op keeps, as `state_dict` suffixes.
  public var bufferSuffixes: [String] { definition.bufferSuffixes }
  /// Integer step counters the op keeps, as `state_dict` suffixes.
  public var counterSuffixes: [String] { (definition as? any StatefulOp)?.counterSuffixes ?? [] }
  /// Extra results an op defines besides its value, referenced as `NAME.SUFFIX`.
  public var secondaryOutputs: [String] { definition.secondaryOutputs }
  /// The op's dialect.
  public var role: OpRole { definition.role }
  /// Attributes in canonical order, omitting those at their default.
  var printedAttributes: [(String, String)] { definition.printedAttributes }
  /// The shape rule: the result type from the operand types.
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try definition.resultType(x) }
  /// Parameter types (in `parameterSuffixes` order) from the operand types.
  public func parameterTypes(_ x: [TensorType]) -> [TensorType] { definition.parameterTypes(x) }
  /// Forward FLOPs per image.
  public func flopsPerImage(_ x: [TensorType], result: TensorType) -> Int { definition.flopsPerImage(x, result: result) }
}

/// A shape rule that failed: the message names the shapes and the rule.
public struct ShapeError: Error, Equatable {
  public var message: String
  /// The operand the error points at, when one is to blame.
  public var operand: Int?
  public init(_ message: String, operand: Int? = nil) {
    self.message = message
    self.operand = operand
  }
}

/// Shape rule of the elementwise binary ops: both operands must have one type.
func sameShape(_ op: String, _ a: TensorType, _ b: TensorType) throws(ShapeError) -> TensorType {
  guard a.dtype == .f32, b.dtype == .f32 else { throw ShapeError("\(op) needs f32 operands, got \(a) and \(b)") }
  guard a.dims == b.dims else { throw ShapeError("\(op) needs operands of one shape, got \(a) and \(b)", operand: 1) }
  return a
}

/// Checks that an operand is an f32 tensor of a given rank.
func expect(_ op: String, _ t: TensorType, rank: Int, layout: String, operand: Int = 0) throws(ShapeError) {
  guard t.dtype == .f32 else { throw ShapeError("\(op) expects an f32 tensor, got \(t)", operand: operand) }
  guard t.dims.count == rank else {
    throw ShapeError("\(op) expects a rank-\(rank) input \(layout), got \(t) (rank \(t.dims.count))", operand: operand)
  }
}

/// Builds a result type, failing when its element count overflows or passes the limit.
func checkedType(_ op: String, _ dims: [Int]) throws(ShapeError) -> TensorType {
  let t = TensorType(.f32, dims)
  guard t.checkedCount != nil else {
    throw ShapeError("\(op) result \(t) has more than 2^40 elements")
  }
  return t
}
