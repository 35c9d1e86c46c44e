import CLLVM

/// exp(x) in float32 as inline arithmetic rather than `llvm.exp.f32`, which becomes a call to the C library's
/// `expf` per element: the loop vectoriser cannot widen a call, so every elementwise loop with an exponential
/// (sigmoid, SiLU, tanh, softmax) ran one element at a time. SiLU was 56% of EfficientNet-B0's batch-1 time.
///
/// The method is the classic one (Cody and Waite's range reduction, a degree-5 minimax polynomial, and a scale
/// by 2^n written into the exponent bits): exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in
/// [-ln2/2, ln2/2], with ln 2 in two parts so r is exact; 2^n is applied as 2^(n-1) * 2, so n = 128 (just below
/// the overflow) has an exponent field too. Outside the range: below -86.64 (where 2^(n-1) would leave the
/// normal floats) the result is 0, as tiny results are flushed; above ln(FLT_MAX) = 88.72 it is +infinity, as
/// expf's; NaN stays NaN.
extension LLVMRenderer {
  /// The least x whose 2^(n-1) is a normal float (n >= -125); below it exp(x) < 2.4e-38 is flushed to 0.
  static let expLowest: Float = -86.643
  /// ln(FLT_MAX): exp overflows above it.
  static let expOverflow: Float = 88.722_84
  static let log2e: Float = 1.442_695_04
  /// ln 2 as a high part exact in few bits plus the rest, so n * high is exact for |n| <= 128.
  static let ln2High: Float = 0.693_359_375, ln2Low: Float = -2.121_944_40e-4
  /// The polynomial for (exp(r) - 1 - r) / r^2, highest degree first.
  static let expPolynomial: [Float] = [1.987_569_150_0e-4, 1.398_199_950_7e-3, 8.333_451_907_3e-3, 4.166_579_589_4e-2,
                                       1.666_666_545_9e-1, 5.000_000_120_1e-1]

  func exponential(_ x: LLVMValueRef) -> LLVMValueRef {
    func c(_ v: Float) -> LLVMValueRef { LLVMConstReal(f32, Double(v)) }
    func select(_ test: LLVMValueRef, _ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef { LLVMBuildSelect(builder, test, a, b, "")! }
    func greater(_ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef { LLVMBuildFCmp(builder, LLVMRealOGT, a, b, "")! }
    func add(_ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef { LLVMBuildFAdd(builder, a, b, "")! }
    func mul(_ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef { LLVMBuildFMul(builder, a, b, "")! }
    // Clamped by ordered compares, so NaN passes through (and is restored at the end).
    let low = select(greater(c(Self.expLowest), x), c(Self.expLowest), x)
    let t = select(greater(low, c(Self.expOverflow)), c(Self.expOverflow), low)
    let n = intrinsic("llvm.floor.f32", [add(mul(t, c(Self.log2e)), c(0.5))])
    let r = LLVMBuildFSub(builder, LLVMBuildFSub(builder, t, mul(n, c(Self.ln2High)), ""), mul(n, c(Self.ln2Low)), "")!
    var p = c(Self.expPolynomial[0])
    for a in Self.expPolynomial.dropFirst() { p = add(mul(p, r), c(a)) }
    let e = add(add(mul(p, mul(r, r)), r), c(1))
    // 2^(n-1): n - 1 + 127 in the exponent field; then the factor 2.
    let bits = LLVMBuildShl(builder, LLVMBuildAdd(builder, LLVMBuildFPToSI(builder, n, i32, ""), LLVMConstInt(i32, 126, 0), ""), LLVMConstInt(i32, 23, 0), "")!
    let scaled = mul(mul(e, LLVMBuildBitCast(builder, bits, f32, "")!), c(2))
    let underflow = select(greater(c(Self.expLowest), x), c(0), scaled)
    let overflow = select(greater(x, c(Self.expOverflow)), c(.infinity), underflow)
    return select(LLVMBuildFCmp(builder, LLVMRealUNO, x, x, "")!, x, overflow)
  }
}
