import CLLVM

/// An owned thread-safe context plus one module in it, ready to verify, optimise and hand to the JIT.
public final class Module {
  let context: LLVMOrcThreadSafeContextRef
  /// The module; nil once handed to the JIT.
  private(set) var ref: LLVMModuleRef?
  public var llvmContext: LLVMContextRef { LLVMOrcThreadSafeContextGetContext(context) }

  public init(name: String) {
    context = LLVMOrcCreateNewThreadSafeContext()
    ref = LLVMModuleCreateWithNameInContext(name, LLVMOrcThreadSafeContextGetContext(context))
  }

  public var module: LLVMModuleRef {
    guard let ref else { preconditionFailure("module was already handed to the JIT") }
    return ref
  }

  /// Checks the module; a failure names what LLVM found.
  public func verify() throws {
    var msg: UnsafeMutablePointer<CChar>?
    if LLVMVerifyModule(module, LLVMReturnStatusAction, &msg) != 0 { throw LLVMError.verification(LLVMError.take(msg)) }
    _ = LLVMError.take(msg)
  }

  /// The optimisation pipeline for generated code (loop and SLP vectorisers on). O3: on Zen 1, O1 with the
  /// two vectorisers added compiles SimpleCNN no faster (0.435 s either way), and plain O1 leaves the
  /// elementwise loops scalar.
  public static let pipeline = "default<O3>"

  /// Runs the new pass manager pipeline with the target's machine (without it LLVM does not vectorise).
  public func optimize(_ tm: TargetMachine, pipeline: String = Module.pipeline) throws {
    LLVMSetTarget(module, tm.triple)
    LLVMSetDataLayout(module, tm.dataLayout)
    let opts = LLVMCreatePassBuilderOptions()
    defer { LLVMDisposePassBuilderOptions(opts) }
    LLVMPassBuilderOptionsSetLoopVectorization(opts, 1)
    LLVMPassBuilderOptionsSetSLPVectorization(opts, 1)
    // The heavy lifting is in GEMMs; unrolling and interleaving the many small loops mostly costs compile time.
    LLVMPassBuilderOptionsSetLoopUnrolling(opts, 0)
    LLVMPassBuilderOptionsSetLoopInterleaving(opts, 0)
    if let m = LLVMError.message(LLVMRunPasses(module, pipeline, tm.ref, opts)) { throw LLVMError.passes(m) }
  }

  /// `body` over the module as LLVM bitcode.
  public func withBitcode<T>(_ body: (UnsafeBufferPointer<UInt8>) -> T) -> T {
    let buffer = LLVMWriteBitcodeToMemoryBuffer(module)!
    defer { LLVMDisposeMemoryBuffer(buffer) }
    let start = UnsafeRawPointer(LLVMGetBufferStart(buffer)!).assumingMemoryBound(to: UInt8.self)
    return body(UnsafeBufferPointer(start: start, count: LLVMGetBufferSize(buffer)))
  }

  /// The module as textual IR.
  public var text: String { LLVMError.take(LLVMPrintModuleToString(module)) }

  /// Gives the module to the JIT as a ThreadSafeModule; this object no longer owns it.
  func release() -> LLVMOrcThreadSafeModuleRef {
    let tsm = LLVMOrcCreateNewThreadSafeModule(module, context)!
    ref = nil
    return tsm
  }

  deinit {
    if let ref { LLVMDisposeModule(ref) }
    LLVMOrcDisposeThreadSafeContext(context)
  }
}

extension Module {
  /// Adds a function declaration or definition to the module.
  public func addFunction(_ name: String, _ type: LLVMTypeRef) -> LLVMValueRef {
    LLVMAddFunction(module, name, type)
  }
}
