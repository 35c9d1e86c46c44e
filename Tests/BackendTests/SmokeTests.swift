import CLLVM
import COpenBLAS
import LLVMBackend
import Testing

/// The real stack from day one: an LLVM function through the C API, optimised with the new pass
/// manager and a host TargetMachine, JIT-compiled with ORC LLJIT and called; and OpenBLAS sgemm.
@Suite struct SmokeTests {
  @Test func jitCompilesAndCallsAVectorisedLoop() throws {
    let tm = try TargetMachine(.host())
    let module = Module(name: "smoke")
    let ctx = module.llvmContext
    let f32 = LLVMFloatTypeInContext(ctx)!
    let i64 = LLVMInt64TypeInContext(ctx)!
    let ptr = LLVMPointerTypeInContext(ctx, 0)!
    // void saxpy(i64 n, float a, ptr x, ptr y): y[i] += a * x[i]
    var params: [LLVMTypeRef?] = [i64, f32, ptr, ptr]
    let fnTy = LLVMFunctionType(LLVMVoidTypeInContext(ctx), &params, 4, 0)!
    let fn = module.addFunction("saxpy", fnTy)
    let b = LLVMCreateBuilderInContext(ctx)
    defer { LLVMDisposeBuilder(b) }
    let entry = LLVMAppendBasicBlockInContext(ctx, fn, "entry")
    let loop = LLVMAppendBasicBlockInContext(ctx, fn, "loop")
    let exit = LLVMAppendBasicBlockInContext(ctx, fn, "exit")
    LLVMPositionBuilderAtEnd(b, entry)
    let n = LLVMGetParam(fn, 0), a = LLVMGetParam(fn, 1), x = LLVMGetParam(fn, 2), y = LLVMGetParam(fn, 3)
    let zero = LLVMConstInt(i64, 0, 0)
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, n, zero, "nonempty"), loop, exit)
    LLVMPositionBuilderAtEnd(b, loop)
    let i = LLVMBuildPhi(b, i64, "i")!
    var xi: [LLVMValueRef?] = [i]
    let px = LLVMBuildInBoundsGEP2(b, f32, x, &xi, 1, "px")
    let py = LLVMBuildInBoundsGEP2(b, f32, y, &xi, 1, "py")
    let sum = LLVMBuildFAdd(b, LLVMBuildLoad2(b, f32, py, "yv"), LLVMBuildFMul(b, a, LLVMBuildLoad2(b, f32, px, "xv"), "ax"), "sum")
    LLVMBuildStore(b, sum, py)
    let next = LLVMBuildAdd(b, i, LLVMConstInt(i64, 1, 0), "next")!
    var incoming: [LLVMValueRef?] = [zero, next]
    var blocks: [LLVMBasicBlockRef?] = [entry, loop]
    LLVMAddIncoming(i, &incoming, &blocks, 2)
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, next, n, "more"), loop, exit)
    LLVMPositionBuilderAtEnd(b, exit)
    LLVMBuildRetVoid(b)

    try module.verify()
    try module.optimize(tm)
    #expect(module.text.contains("<16 x float>") || module.text.contains("<8 x float>"), "the loop vectorises with a host TargetMachine")
    let jit = try JIT(.host())
    try jit.add(module)
    typealias Saxpy = @convention(c) (Int64, Float, UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void
    let saxpy = unsafeBitCast(try jit.lookup("saxpy"), to: Saxpy.self)
    let xs = (0..<1000).map { Float($0) }
    var ys = [Float](repeating: 1, count: 1000)
    saxpy(1000, 2, xs, &ys)
    #expect(ys[0] == 1 && ys[999] == 1999)
    #expect(zip(xs, ys).allSatisfy { $1 == 1 + 2 * $0 })
  }

  @Test func missingSymbolIsAnError() throws {
    let jit = try JIT(.host())
    #expect(throws: LLVMError.self) { _ = try jit.lookup("no_such_function") }
  }

  @Test func sgemmMultiplies() {
    // C[2x2] = A[2x3] * B[3x2]
    let a: [Float] = [1, 2, 3, 4, 5, 6]
    let bm: [Float] = [7, 8, 9, 10, 11, 12]
    var c = [Float](repeating: 0, count: 4)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 3, 1, a, 3, bm, 2, 0, &c, 2)
    #expect(c == [58, 64, 139, 154])
  }
}
