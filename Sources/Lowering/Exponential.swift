/// How both back ends compute the kernel IR's `exp` in float32: as inline arithmetic rather than a call to the C
/// library's `expf`, so the loop vectoriser widens it (a call per element kept every elementwise loop with an
/// exponential scalar: sigmoid, SiLU, tanh, softmax; SiLU was 56% of EfficientNet-B0's batch-1 time), and so the
/// two back ends get the same bits.
///
/// The method is the classic one (Cody and Waite's range reduction, a degree-5 minimax polynomial, and a scale by
/// a power of two written into the exponent bits): exp(x) = 2^n exp(r), n = floor(x log2(e) + 1/2), r = x - n ln 2
/// in [-ln2/2, ln2/2], with ln 2 in two parts so r is exact; exp(r) = 1 + r + r^2 P(r); 2^n is applied as
/// 2^(n-1) * 2 so n = 128 (just below the overflow) has an exponent field too. Within 2 ulp of the correctly rounded
/// value. Below -86.64 (where 2^(n-1) would leave the normal floats) the result is 0: tiny results are flushed;
/// above ln(FLT_MAX) = 88.72 it is +infinity, as expf's; NaN stays NaN. Each back end writes the steps in this
/// order, without fused multiply-adds.
public enum Exponential {
  /// The least x whose 2^(n-1) is a normal float (n >= -125); below it exp(x) < 2.4e-38 is flushed to 0.
  public static let lowest: Float = -86.643
  /// ln(FLT_MAX): exp overflows above it.
  public static let overflow: Float = 88.722_84
  public static let log2e: Float = 1.442_695_04
  /// ln 2 as a high part exact in few bits, so n * high is exact for |n| <= 128, plus the rest.
  public static let ln2High: Float = 0.693_359_375, ln2Low: Float = -2.121_944_40e-4
  /// P, highest degree first: (exp(r) - 1 - r) / r^2 on [-ln2/2, ln2/2].
  public static let polynomial: [Float] = [1.987_569_150_0e-4, 1.398_199_950_7e-3, 8.333_451_907_3e-3, 4.166_579_589_4e-2,
                                           1.666_666_545_9e-1, 5.000_000_120_1e-1]
  /// 2^(n-1) has exponent field n - 1 + 127.
  public static let exponentBias: Int32 = 126
}
