import CLLVM
import Lowering

/// The kernel IR's `exp` as inline LLVM arithmetic (`Exponential` in Lowering says how and why), which the loop
/// vectoriser widens.
extension LLVMRenderer {
  func exponential(_ x: LLVMValueRef) -> LLVMValueRef {
    typealias E = Exponential
    func c(_ v: Float) -> LLVMValueRef { LLVMConstReal(f32, Double(v)) }
    func select(_ test: LLVMValueRef, _ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef { LLVMBuildSelect(builder, test, a, b, "")! }
    func greater(_ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef { LLVMBuildFCmp(builder, LLVMRealOGT, a, b, "")! }
    func add(_ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef { LLVMBuildFAdd(builder, a, b, "")! }
    func mul(_ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef { LLVMBuildFMul(builder, a, b, "")! }
    // Clamped by ordered compares, so NaN passes through (and is returned as it is at the end).
    let low = select(greater(c(E.lowest), x), c(E.lowest), x)
    let t = select(greater(low, c(E.overflow)), c(E.overflow), low)
    let n = intrinsic("llvm.floor.f32", [add(mul(t, c(E.log2e)), c(0.5))])
    let r = LLVMBuildFSub(builder, LLVMBuildFSub(builder, t, mul(n, c(E.ln2High)), ""), mul(n, c(E.ln2Low)), "")!
    var p = c(E.polynomial[0])
    for a in E.polynomial.dropFirst() { p = add(mul(p, r), c(a)) }
    let e = add(add(mul(p, mul(r, r)), r), c(1))
    let field = LLVMBuildAdd(builder, LLVMBuildFPToSI(builder, n, i32, ""), LLVMConstInt(i32, UInt64(E.exponentBias), 0), "")
    let power = LLVMBuildBitCast(builder, LLVMBuildShl(builder, field, LLVMConstInt(i32, 23, 0), ""), f32, "")!
    let scaled = mul(mul(e, power), c(2))
    let underflow = select(greater(c(E.lowest), x), c(0), scaled)
    let overflow = select(greater(x, c(E.overflow)), c(.infinity), underflow)
    return select(LLVMBuildFCmp(builder, LLVMRealUNO, x, x, "")!, x, overflow)
  }
}
