import Foundation
import Lowering
import Runtime

/// Compiles lowered programs with the LLVM back end: build IR, verify, optimise with the target's
/// TargetMachine (`default<O3>`), and JIT with ORC LLJIT for the same target. Keeps every JIT it made alive.
public struct JITCompiler: ProgramCompiler {
  public let target: Target
  var jits: [JIT] = []
  var count = 0
  /// Seconds spent in IR building, optimisation and code generation, summed over compiles.
  public private(set) var irSeconds = 0.0, optimizeSeconds = 0.0, codegenSeconds = 0.0

  public init(target: Target) throws {
    try loadBLAS()
    self.target = target
  }

  public mutating func compile(_ programs: [Program]) throws -> [EntryPoint] {
    count += 1
    var t = Date()
    let module = LLVMRenderer.render(programs, moduleName: "cnnc\(count)")
    try module.verify()
    irSeconds += Date().timeIntervalSince(t)
    t = Date()
    let tm = try TargetMachine(target)
    try module.optimize(tm)
    optimizeSeconds += Date().timeIntervalSince(t)
    t = Date()
    let jit = try JIT(target)
    try jit.add(module)
    let entries = try programs.map { p in unsafeBitCast(try jit.lookup(p.functions[0].name), to: EntryPoint.self) }
    codegenSeconds += Date().timeIntervalSince(t)
    jits.append(jit)
    return entries
  }
}
