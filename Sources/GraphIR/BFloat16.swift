/// bfloat16 arithmetic, defined once here: the rounding of a conv's or dense layer's product operands in a bf16
/// program (the reference's `ReferenceContext.bf16Products`), and the kernel IR's pairs and dot product
/// (`FExpr.bf16Pair`, `VExpr.dotBF16`), which the back ends render to these bits.
public enum BF16 {
  /// The exponent bits of an f32; zero in a subnormal (or zero).
  public static let exponentMask: UInt32 = 0x7f80_0000
  /// The sign bit.
  public static let signMask: UInt32 = 0x8000_0000

  /// The bfloat16 bits of `x`: round to nearest even, a subnormal to zero of its sign (the hardware treats
  /// subnormal inputs as zero), a NaN to a quiet NaN.
  public static func round(_ x: Float) -> UInt32 {
    var u = x.bitPattern
    if u & exponentMask == 0 { u &= signMask }
    if u & ~signMask > exponentMask { return (u >> 16) | 0x40 }
    return (u &+ 0x7fff &+ ((u >> 16) & 1)) >> 16
  }

  /// x rounded to the nearest bfloat16 value, as an f32.
  public static func rounded(_ x: Float) -> Float { Float(bitPattern: round(x) << 16) }

  /// `FExpr.bf16Pair`: low's bits in the low half, high's in the high half.
  public static func pair(_ low: Float, _ high: Float) -> Float { Float(bitPattern: round(low) | (round(high) << 16)) }

  /// A subnormal as zero of its sign.
  public static func flush(_ x: Float) -> Float {
    x.bitPattern & exponentMask == 0 ? Float(bitPattern: x.bitPattern & signMask) : x
  }

  /// The f32 values of a pair's halves.
  public static func halves(_ p: Float) -> (low: Float, high: Float) {
    (Float(bitPattern: p.bitPattern << 16), Float(bitPattern: p.bitPattern & 0xffff_0000))
  }

  /// One lane of `VExpr.dotBF16`.
  public static func dot(_ acc: Float, _ a: Float, _ b: Float) -> Float {
    let (al, ah) = halves(a), (bl, bh) = halves(b)
    let t = flush(flush(acc).addingProduct(ah, bh))
    return flush(t.addingProduct(al, bl))
  }
}
