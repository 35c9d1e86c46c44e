import CLLVM
import GraphIR
import Lowering

/// The kernel IR's int8 operations (`Int8Arithmetic` in GraphIR defines their arithmetic) as LLVM IR: integer operations on
/// the floats' bits, and the u8 x s8 dot product either as the target's instruction or as shifts and multiplies,
/// to the same integers.
extension LLVMRenderer {
  /// The 32-bit integer type of `lanes` lanes (scalar for 1).
  func int32s(_ lanes: Int) -> LLVMTypeRef { lanes == 1 ? i32 : LLVMVectorType(i32, UInt32(lanes))! }
  /// The float type of `lanes` lanes.
  func floats(_ lanes: Int) -> LLVMTypeRef { lanes == 1 ? f32 : LLVMVectorType(f32, UInt32(lanes))! }

  /// `FExpr.round` / `VExpr.round`: round half to even.
  func roundEven(_ x: LLVMValueRef, lanes: Int) -> LLVMValueRef {
    let type = floats(lanes)
    var types: [LLVMTypeRef?] = [type]
    let fnTy = LLVMFunctionType(type, &types, 1, 0)!
    var args: [LLVMValueRef?] = [x]
    return LLVMBuildCall2(builder, fnTy, declared(lanes == 1 ? "llvm.roundeven.f32" : "llvm.roundeven.v\(lanes)f32", fnTy), &args, 1, "")
  }

  /// `FExpr.bytes` / `VExpr.bytes`: each integer's low byte, the first in the low byte of the word.
  func bytes(_ parts: [LLVMValueRef], lanes: Int) -> LLVMValueRef {
    let bits = int32s(lanes)
    var word = LLVMConstNull(bits)!
    for (i, p) in parts.enumerated() {
      let byte = LLVMBuildAnd(builder, LLVMBuildFPToSI(builder, p, bits, ""), splat(0xff, bits), "")!
      word = LLVMBuildOr(builder, word, i == 0 ? byte : LLVMBuildShl(builder, byte, splat(UInt32(8 * i), bits), ""), "")
    }
    return LLVMBuildBitCast(builder, word, floats(lanes), "")
  }

  /// `VExpr.packBytes`: each vector's integers truncated to bytes, the four concatenated in order.
  func packBytes(_ parts: [LLVMValueRef]) -> LLVMValueRef {
    let bytes = parts.map { LLVMBuildTrunc(builder, LLVMBuildFPToSI(builder, $0, int32s(lanes), ""), LLVMVectorType(LLVMInt8TypeInContext(ctx), UInt32(lanes)), "")! }
    func concat(_ a: LLVMValueRef, _ b: LLVMValueRef, _ count: Int) -> LLVMValueRef {
      var order: [LLVMValueRef?] = (0..<(2 * count)).map { LLVMConstInt(i32, UInt64($0), 0) }
      return LLVMBuildShuffleVector(builder, a, b, LLVMConstVector(&order, UInt32(2 * count)), "")!
    }
    let all = concat(concat(bytes[0], bytes[1], lanes), concat(bytes[2], bytes[3], lanes), 2 * lanes)
    return LLVMBuildBitCast(builder, all, vec, "")
  }

  /// `FExpr.fromInt32` / `VExpr.fromInt32`: the bits as a signed integer, converted (nearest even).
  func fromInt32(_ x: LLVMValueRef, lanes: Int) -> LLVMValueRef {
    LLVMBuildSIToFP(builder, LLVMBuildBitCast(builder, x, int32s(lanes), ""), floats(lanes), "")
  }

  /// `FExpr.dotU8S8` / `VExpr.dotU8S8`: the target's `vpdpbusd` where it has one (`Target.int8Dot`), else each
  /// byte pair's product added in turn (the same integers: the sum of four products is exact, and both wrap).
  func dotU8S8(_ acc: LLVMValueRef, _ a: LLVMValueRef, _ b: LLVMValueRef, lanes: Int) -> LLVMValueRef {
    let bits = int32s(lanes)
    let (sum, u, s) = (LLVMBuildBitCast(builder, acc, bits, "")!, LLVMBuildBitCast(builder, a, bits, "")!, LLVMBuildBitCast(builder, b, bits, "")!)
    if int8Dot, lanes == 16 {
      var types: [LLVMTypeRef?] = [bits, bits, bits]
      let fnTy = LLVMFunctionType(bits, &types, 3, 0)!
      var args: [LLVMValueRef?] = [sum, u, s]
      return LLVMBuildBitCast(builder, LLVMBuildCall2(builder, fnTy, declared("llvm.x86.avx512.vpdpbusd.512", fnTy), &args, 3, ""), floats(lanes), "")
    }
    var total = sum
    for i in 0..<4 {
      let unsigned = LLVMBuildAnd(builder, LLVMBuildLShr(builder, u, splat(UInt32(8 * i), bits), ""), splat(0xff, bits), "")
      let signed = LLVMBuildAShr(builder, LLVMBuildShl(builder, s, splat(UInt32(24 - 8 * i), bits), ""), splat(24, bits), "")
      total = LLVMBuildAdd(builder, total, LLVMBuildMul(builder, unsigned, signed, ""), "")
    }
    return LLVMBuildBitCast(builder, total, floats(lanes), "")
  }
}
