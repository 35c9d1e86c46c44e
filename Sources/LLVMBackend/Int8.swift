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
    return intrinsic(lanes == 1 ? "llvm.roundeven.f32" : "llvm.roundeven.v\(lanes)f32", type, [x], [type])
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

  /// `FExpr.dotU8S8` / `VExpr.dotU8S8`: the target's `vpdpbusd` where it has one (`Target.int8Dot`); on other x86
  /// vectors (`Target.int8Pairs`) `pmaddubsw` then `pmaddwd` by ones when the pairs fit 16 bits, else the bytes
  /// widened to 16-bit halves (even and odd bytes) and two `pmaddwd`; elsewhere each byte pair's product added in
  /// turn. All the same integers: a sum of four products is exact, and all wrap alike.
  func dotU8S8(_ acc: LLVMValueRef, _ a: LLVMValueRef, _ b: LLVMValueRef, lanes: Int, pairsFit16: Bool) -> LLVMValueRef {
    let bits = int32s(lanes)
    let (sum, u, s) = (LLVMBuildBitCast(builder, acc, bits, "")!, LLVMBuildBitCast(builder, a, bits, "")!, LLVMBuildBitCast(builder, b, bits, "")!)
    if int8Dot, lanes == 16 {
      return LLVMBuildBitCast(builder, intrinsic("llvm.x86.avx512.vpdpbusd.512", bits, [sum, u, s], [bits, bits, bits]), floats(lanes), "")
    }
    if let names = pairMultiplies(lanes: lanes) {
      let words = LLVMVectorType(LLVMInt16TypeInContext(ctx), UInt32(2 * lanes))!
      if pairsFit16, let bytesNamed = names.bytes {
        let bytes = LLVMVectorType(LLVMInt8TypeInContext(ctx), UInt32(4 * lanes))!
        let (ub, sb) = (LLVMBuildBitCast(builder, u, bytes, "")!, LLVMBuildBitCast(builder, s, bytes, "")!)
        let pairs = intrinsic(bytesNamed, words, [ub, sb], [bytes, bytes])
        let quads = intrinsic(names.words, bits, [pairs, splat(1, words)], [words, words])
        return LLVMBuildBitCast(builder, LLVMBuildAdd(builder, sum, quads, ""), floats(lanes), "")
      }
      // Each 16-bit half of a word: its low byte (bytes 0 and 2) and its high byte (1 and 3), u8 zero-extended and
      // s8 sign-extended, so every product pair sums exactly in 32 bits.
      let (uw, sw) = (LLVMBuildBitCast(builder, u, words, "")!, LLVMBuildBitCast(builder, s, words, "")!)
      let eight = splat(8, words)
      let uLow = LLVMBuildAnd(builder, uw, splat(0xff, words), "")!, uHigh = LLVMBuildLShr(builder, uw, eight, "")!
      let sLow = LLVMBuildAShr(builder, LLVMBuildShl(builder, sw, eight, ""), eight, "")!, sHigh = LLVMBuildAShr(builder, sw, eight, "")!
      let low = intrinsic(names.words, bits, [uLow, sLow], [words, words]), high = intrinsic(names.words, bits, [uHigh, sHigh], [words, words])
      return LLVMBuildBitCast(builder, LLVMBuildAdd(builder, LLVMBuildAdd(builder, sum, low, ""), high, ""), floats(lanes), "")
    }
    var total = sum
    for i in 0..<4 {
      let unsigned = LLVMBuildAnd(builder, LLVMBuildLShr(builder, u, splat(UInt32(8 * i), bits), ""), splat(0xff, bits), "")
      let signed = LLVMBuildAShr(builder, LLVMBuildShl(builder, s, splat(UInt32(24 - 8 * i), bits), ""), splat(24, bits), "")
      total = LLVMBuildAdd(builder, total, LLVMBuildMul(builder, unsigned, signed, ""), "")
    }
    return LLVMBuildBitCast(builder, total, floats(lanes), "")
  }

  /// x86's pair-summing multiplies at this width (`Target.int8Pairs`): `pmaddubsw`'s (nil where not assumed) and
  /// `pmaddwd`'s intrinsics; nil off x86 or for scalars.
  func pairMultiplies(lanes: Int) -> (bytes: String?, words: String)? {
    guard int8Pairs else { return nil }
    switch lanes {
    case 16: return ("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512")
    case 8: return ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd")
    default: return nil
    }
  }

  /// A call of the intrinsic `name` returning `result`.
  func intrinsic(_ name: String, _ result: LLVMTypeRef, _ arguments: [LLVMValueRef], _ types: [LLVMTypeRef]) -> LLVMValueRef {
    var parameterTypes: [LLVMTypeRef?] = types
    let fnTy = LLVMFunctionType(result, &parameterTypes, UInt32(types.count), 0)!
    var args: [LLVMValueRef?] = arguments
    return LLVMBuildCall2(builder, fnTy, declared(name, fnTy), &args, UInt32(arguments.count), "")!
  }
}
