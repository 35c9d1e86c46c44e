import CLLVM
import GraphIR
import Lowering

/// The kernel IR's bf16 pairs and dot product (`BF16` in Lowering defines their arithmetic) as LLVM IR: integer
/// operations on the floats' bits, and the dot product either as the target's instruction or as two FMAs with
/// the instruction's flushes, to the same bits.
extension LLVMRenderer {
  /// `FExpr.bf16Pair` (`lanes` 1) or `VExpr.bf16Pair` of floats `low` and `high`.
  func bf16Pair(_ low: LLVMValueRef, _ high: LLVMValueRef, lanes: Int) -> LLVMValueRef {
    let bits = lanes == 1 ? i32 : LLVMVectorType(i32, UInt32(lanes))!
    let rounded = LLVMBuildOr(builder, bf16Round(low, bits), LLVMBuildShl(builder, bf16Round(high, bits), splat(16, bits), ""), "")
    return LLVMBuildBitCast(builder, rounded, lanes == 1 ? f32 : LLVMVectorType(f32, UInt32(lanes)), "")
  }

  /// `VExpr.bf16Pack`: both vectors' roundings, truncated to 16 bits and concatenated (lane i of the result holds
  /// elements 2i and 2i + 1 of the 2 x lanes, the lower element in the low half).
  func bf16Pack(_ first: LLVMValueRef, _ second: LLVMValueRef) -> LLVMValueRef {
    let bits = LLVMVectorType(i32, UInt32(lanes))!
    var order: [LLVMValueRef?] = (0..<(2 * lanes)).map { LLVMConstInt(i32, UInt64($0), 0) }
    let both = LLVMBuildShuffleVector(builder, bf16Round(first, bits), bf16Round(second, bits), LLVMConstVector(&order, UInt32(2 * lanes)), "")
    let halves = LLVMBuildTrunc(builder, both, LLVMVectorType(LLVMInt16TypeInContext(ctx), UInt32(2 * lanes)), "")
    return LLVMBuildBitCast(builder, halves, vec, "")
  }

  /// `BF16.round`: the bfloat16 bits of `x` in the low half of each 32-bit lane.
  func bf16Round(_ x: LLVMValueRef, _ bits: LLVMTypeRef) -> LLVMValueRef {
    let u = flushedBits(LLVMBuildBitCast(builder, x, bits, "")!, bits)
    let high = LLVMBuildLShr(builder, u, splat(16, bits), "")!
    let nan = LLVMBuildICmp(builder, LLVMIntUGT, LLVMBuildAnd(builder, u, splat(~BF16.signMask, bits), ""), splat(BF16.exponentMask, bits), "")
    let even = LLVMBuildAnd(builder, high, splat(1, bits), "")
    let rounded = LLVMBuildLShr(builder, LLVMBuildAdd(builder, LLVMBuildAdd(builder, u, splat(0x7fff, bits), ""), even, ""), splat(16, bits), "")
    return LLVMBuildSelect(builder, nan, LLVMBuildOr(builder, high, splat(0x40, bits), ""), rounded, "")
  }

  /// Bits `u` with a subnormal (zero exponent) replaced by zero of its sign (`BF16.flush`).
  func flushedBits(_ u: LLVMValueRef, _ bits: LLVMTypeRef) -> LLVMValueRef {
    let subnormal = LLVMBuildICmp(builder, LLVMIntEQ, LLVMBuildAnd(builder, u, splat(BF16.exponentMask, bits), ""), LLVMConstNull(bits), "")
    return LLVMBuildSelect(builder, subnormal, LLVMBuildAnd(builder, u, splat(BF16.signMask, bits), ""), u, "")!
  }

  /// `VExpr.dotBF16`: the target's `vdpbf16ps` where it has one (`Target.bf16Dot`), else `BF16.dot`'s steps.
  func dotBF16(_ acc: LLVMValueRef, _ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef {
    if bf16Dot, lanes == 16 {
      let pairs = LLVMVectorType(LLVMBFloatTypeInContext(ctx), 32)!
      return intrinsic("llvm.x86.avx512bf16.dpbf16ps.512", vec, [acc, LLVMBuildBitCast(builder, a, pairs, "")!, LLVMBuildBitCast(builder, b, pairs, "")!],
                       [vec, pairs, pairs])
    }
    let bits = LLVMVectorType(i32, UInt32(lanes))!
    func halves(_ x: LLVMValueRef) -> (low: LLVMValueRef, high: LLVMValueRef) {
      let u = LLVMBuildBitCast(builder, x, bits, "")!
      return (LLVMBuildBitCast(builder, LLVMBuildShl(builder, u, splat(16, bits), ""), vec, "")!,
              LLVMBuildBitCast(builder, LLVMBuildAnd(builder, u, splat(0xffff_0000, bits), ""), vec, "")!)
    }
    func flush(_ x: LLVMValueRef) -> LLVMValueRef {
      LLVMBuildBitCast(builder, flushedBits(LLVMBuildBitCast(builder, x, bits, "")!, bits), vec, "")!
    }
    // Always a fused multiply-add: the product of two bf16 values is exact, and the sum is rounded once.
    var types: [LLVMTypeRef?] = [vec, vec, vec]
    let fnTy = LLVMFunctionType(vec, &types, 3, 0)!
    let fma = declared("llvm.fma.v\(lanes)f32", fnTy)
    func fused(_ x: LLVMValueRef, _ y: LLVMValueRef, _ z: LLVMValueRef) -> LLVMValueRef {
      var args: [LLVMValueRef?] = [x, y, z]
      return LLVMBuildCall2(builder, fnTy, fma, &args, 3, "")
    }
    let (al, ah) = halves(a), (bl, bh) = halves(b)
    return flush(fused(al, bl, flush(fused(ah, bh, flush(acc)))))
  }

  /// The integer constant `v` in every lane of `type`, of its lanes' width (or `type` itself when scalar).
  func splat(_ v: UInt32, _ type: LLVMTypeRef) -> LLVMValueRef {
    guard LLVMGetTypeKind(type) == LLVMVectorTypeKind else { return LLVMConstInt(type, UInt64(v), 0) }
    let n = Int(LLVMGetVectorSize(type))
    var elements: [LLVMValueRef?] = Array(repeating: LLVMConstInt(LLVMGetElementType(type), UInt64(v), 0), count: n)
    return LLVMConstVector(&elements, UInt32(n))
  }
}
