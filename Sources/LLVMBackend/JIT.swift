import CLLVM
import Lowering

/// An owned ORC LLJIT instance for one target (its builder gets a target machine made for that target,
/// not host detection) that resolves undefined symbols from the host process (runtime helpers, OpenBLAS).
public final class JIT {
  private let ref: LLVMOrcLLJITRef

  public init(_ target: Target) throws {
    initializeNativeTarget()
    let builder = LLVMOrcCreateLLJITBuilder()!
    // The builder takes over the target machine, and LLJIT creation takes over the builder.
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(
      try TargetMachine.create(target)))
    var jit: LLVMOrcLLJITRef?
    if let m = LLVMError.message(LLVMOrcCreateLLJIT(&jit, builder)) { throw LLVMError.jit(m) }
    guard let jit else { throw LLVMError.jit("LLJIT creation returned no instance") }
    ref = jit
    var gen: LLVMOrcDefinitionGeneratorRef?
    let prefix = LLVMOrcLLJITGetGlobalPrefix(jit)
    if let m = LLVMError.message(LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, prefix, nil, nil)) {
      throw LLVMError.jit(m)
    }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(jit), gen)
  }

  /// Adds a module; on success the JIT owns it, on failure it is disposed here.
  public func add(_ module: Module) throws {
    let tsm = module.release()
    if let m = LLVMError.message(LLVMOrcLLJITAddLLVMIRModule(ref, LLVMOrcLLJITGetMainJITDylib(ref), tsm)) {
      LLVMOrcDisposeThreadSafeModule(tsm)
      throw LLVMError.jit(m)
    }
  }

  /// Adds compiled object code; the JIT links it (its symbols resolve against the modules and objects
  /// already added and the process).
  public func add(_ object: ObjectCode) throws {
    guard let buffer = object.release() else { throw LLVMError.jit("object code was already handed to a JIT") }
    if let m = LLVMError.message(LLVMOrcLLJITAddObjectFile(ref, LLVMOrcLLJITGetMainJITDylib(ref), buffer)) { throw LLVMError.jit(m) }
  }

  /// The address of a compiled function (the first look-up triggers code generation).
  public func lookup(_ name: String) throws -> UnsafeRawPointer {
    var addr: LLVMOrcExecutorAddress = 0
    if let m = LLVMError.message(LLVMOrcLLJITLookup(ref, &addr, name)) { throw LLVMError.symbolNotFound(m) }
    guard let p = UnsafeRawPointer(bitPattern: UInt(addr)) else { throw LLVMError.symbolNotFound(name) }
    return p
  }

  deinit { _ = LLVMError.message(LLVMOrcDisposeLLJIT(ref)) }
}
