/// Post-training int8 quantization of a conv, defined once here: the conv's input as unsigned 8-bit steps of a
/// calibrated scale about a zero point (`Quantization`), its weights as signed 8-bit steps of one scale per filter
/// (symmetric, ±127, or ±64 in the reduced range), products summed exactly in 32-bit integers, and the sum scaled
/// back to f32. The reference
/// computes with these functions; the kernel IR spells the same steps (`FExpr.round`, `FExpr.bytes`,
/// `VExpr.dotU8S8`, `FExpr.fromInt32`) and the back ends render them to the same bits.
public struct Quantization: Hashable, Sendable {
  /// The real value of one step of the u8 input.
  public var scale: Float
  /// The u8 value that stands for 0.0 (what padding holds).
  public var zeroPoint: Int
  /// The largest weight step: weights are symmetric in -weightSteps...weightSteps (`Int8Arithmetic.fullWeightSteps`,
  /// or `reducedWeightSteps`, which a multiply that sums pairs of products in 16 bits cannot saturate).
  public var weightSteps: Int
  public init(scale: Float, zeroPoint: Int, weightSteps: Int = Int(Int8Arithmetic.fullWeightSteps)) {
    self.scale = scale
    self.zeroPoint = zeroPoint
    self.weightSteps = weightSteps
  }

  /// Whether any two products of u8 steps and weight steps sum within Int16: true in the reduced range (255 x 64 x 2
  /// = 32,640), so x86's `pmaddubsw` (pairs of u8 x s8 products summed with saturation to 16 bits) is exact.
  public var pairsFitInt16: Bool { 2 * 255 * weightSteps <= Int(Int16.max) }

  /// The quantization of values seen in [low, high] (calibration): 0 always representable, the range over 255
  /// steps, the zero point rounded to the step that stands for 0. A range of one point gets the step of 1/255.
  public static func covering(low: Float, high: Float) -> Quantization {
    let lo = min(low, 0), hi = max(high, 0)
    let scale = hi > lo ? (hi - lo) / Int8Arithmetic.activationSteps : 1 / Int8Arithmetic.activationSteps
    let zero = Int((-lo / scale).rounded(.toNearestOrEven))
    return Quantization(scale: scale, zeroPoint: Swift.min(Swift.max(zero, 0), Int(Int8Arithmetic.activationSteps)))
  }
}

/// The arithmetic of a quantized conv.
public enum Int8Arithmetic {
  /// The steps of a u8 activation: 0...255.
  public static let activationSteps: Float = 255
  /// The largest weight step by default: weights are symmetric in -127...127 (never -128, so a weight's negation
  /// is a weight too: the zero point's correction is a dot product of negated weights, `VExpr.dotU8S8`).
  public static let fullWeightSteps: Float = 127
  /// The largest weight step of the reduced range (`cnnc quantize --reduce-range`, ONNX Runtime's `reduce_range`):
  /// -64...64, where two products of a u8 step and a weight step sum within Int16 (`Quantization.pairsFitInt16`).
  public static let reducedWeightSteps: Float = 64
  /// The most products one sum may have: 255 x 127 x this stays within Int32 (the dot product wraps beyond). One
  /// bound for every `Quantization.weightSteps` (the full range's, the tighter).
  public static let maxTerms = Int(Int32.max) / (255 * 127)

  /// `x` as a step of `scale` about `zeroPoint`, clamped to [low, high], as a float holding the integer: round half
  /// to even of x / scale, plus the zero point; a NaN clamps to `low`. The order of the steps is the lowering's.
  @inline(__always)
  public static func step(_ x: Float, scale: Float, zeroPoint: Float, low: Float, high: Float) -> Float {
    let v = (x / scale).rounded(.toNearestOrEven) + zeroPoint
    let above = v > low ? v : low
    return above > high ? high : above
  }

  /// A conv input value's u8 step.
  public static func activation(_ x: Float, _ q: Quantization) -> Float {
    step(x, scale: q.scale, zeroPoint: Float(q.zeroPoint), low: 0, high: activationSteps)
  }

  /// A filter's weight scale: its largest magnitude over the largest step (`Quantization.weightSteps`), or 1 for a
  /// filter of zeros. The magnitude and the running maximum in the lowering's order.
  public static func weightScale(_ w: ArraySlice<Float>, steps: Int = Int(fullWeightSteps)) -> Float {
    var m: Float = 0
    for x in w {
      let minus = 0 - x
      let a = minus > x ? minus : x
      m = a > m ? a : m
    }
    return m > 0 ? m / Float(steps) : 1
  }

  /// A weight's s8 step under its filter's scale, within ±`steps`.
  public static func weight(_ w: Float, scale: Float, steps: Int = Int(fullWeightSteps)) -> Float {
    step(w, scale: scale, zeroPoint: 0, low: -Float(steps), high: Float(steps))
  }

  /// An exact integer sum of products as the f32 output: the sum converted (rounded to nearest even), times the
  /// product of the input's and the filter's scales, rounded once each.
  public static func output(_ sum: Int32, inputScale: Float, weightScale: Float) -> Float {
    Float(sum) * (inputScale * weightScale)
  }
}

extension Graph {
  /// The int8 convs and dense layers (`Conv2DAttrs.quantization`, `DenseAttrs.quantization`): a graph with any runs
  /// at inference only.
  public var int8Nodes: [Node] {
    nodes.filter {
      switch $0.op {
      case .conv2d(let a): a.quantization != nil
      case .dense(let a): a.quantization != nil
      default: false
      }
    }
  }
}
