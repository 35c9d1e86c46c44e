import CLLVM

/// Initialises the native target once per process (LLVM's own initialisers are idempotent).
func initializeNativeTarget() {
  _ = LLVMInitializeNativeTarget()
  _ = LLVMInitializeNativeAsmPrinter()
  _ = LLVMInitializeNativeAsmParser()
}

/// An owned host TargetMachine: triple, CPU name and features of this machine.
public final class TargetMachine {
  let ref: LLVMTargetMachineRef
  public let triple: String
  public let cpu: String

  public init() throws {
    initializeNativeTarget()
    triple = LLVMError.take(LLVMGetDefaultTargetTriple())
    cpu = LLVMError.take(LLVMGetHostCPUName())
    let features = LLVMError.take(LLVMGetHostCPUFeatures())
    var target: LLVMTargetRef?
    var err: UnsafeMutablePointer<CChar>?
    guard LLVMGetTargetFromTriple(triple, &target, &err) == 0, let target else {
      throw LLVMError.target(LLVMError.take(err))
    }
    guard let tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive,
                                           LLVMRelocDefault, LLVMCodeModelJITDefault) else {
      throw LLVMError.target("cannot create a target machine for \(triple) (\(cpu))")
    }
    ref = tm
  }

  /// The data layout string modules must carry for this target.
  public var dataLayout: String {
    let td = LLVMCreateTargetDataLayout(ref)
    defer { LLVMDisposeTargetData(td) }
    return LLVMError.take(LLVMCopyStringRepOfTargetData(td))
  }

  deinit { LLVMDisposeTargetMachine(ref) }
}
