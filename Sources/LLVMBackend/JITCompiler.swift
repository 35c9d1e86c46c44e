import Foundation
import Lowering

/// Compiles lowered programs with the LLVM back end: build IR in one module per compile thread, verify,
/// optimise each with the target's TargetMachine (`Module.pipeline`) and emit its object code, side by side,
/// then link the objects into an ORC LLJIT for the same target. Kernels do not see each other (each is
/// `noinline`), so how they are split over modules changes no instruction of theirs. Keeps every JIT alive.
public struct JITCompiler: ProgramCompiler {
  public let name = "jit"
  public let target: Target
  /// Modules compiled side by side: this machine's processors, up to `maxCompileThreads`.
  public let compileThreads: Int
  /// Beyond this, more threads mostly add modules too small to be worth one.
  public static let maxCompileThreads = 8
  /// Where optimised modules' object code is kept between runs, or nil to compile every module.
  public let cache: ObjectCache?
  var jits: [JIT] = []
  /// Seconds spent in IR building, optimisation and code generation (wall time), summed over compiles.
  public private(set) var irSeconds = 0.0, optimizeSeconds = 0.0, codegenSeconds = 0.0
  /// Modules compiled, and those whose object code came from the cache, over all compiles.
  public private(set) var modulesCompiled = 0, modulesFromCache = 0

  public init(target: Target, compileThreads: Int? = nil, cache: ObjectCache? = nil) throws {
    try loadBLAS()
    self.target = target
    self.compileThreads = max(1, min(Self.maxCompileThreads, compileThreads ?? ProcessInfo.processInfo.activeProcessorCount))
    self.cache = cache
  }

  public mutating func compile(_ programs: [Program]) throws -> [EntryPoint] {
    var t = Date()
    // Each compile has a JIT of its own, so module names need not differ between compiles; equal names
    // keep equal modules' bitcode, and so their cache keys, equal from run to run.
    let modules = LLVMRenderer.render(programs, moduleName: "cnnc", partitions: compileThreads)
    for m in modules { try m.verify() }
    irSeconds += Date().timeIntervalSince(t)
    t = Date()
    let (target, cache) = (self.target, self.cache)
    let objects = try Self.inParallel(modules.count) { i -> (ObjectCode, cached: Bool) in
      let key = cache.map { _ in ObjectCache.key(modules[i], target: target, pipeline: Module.pipeline) }
      if let cache, let key, let object = cache.load(key) { return (object, true) }
      let tm = try TargetMachine(target, positionIndependent: true)
      try modules[i].optimize(tm)
      let object = try modules[i].objectCode(tm)
      if let cache, let key { cache.store(key, object) }
      return (object, false)
    }
    modulesCompiled += objects.count
    modulesFromCache += objects.filter(\.cached).count
    optimizeSeconds += Date().timeIntervalSince(t)
    t = Date()
    let jit = try JIT(target)
    for (o, _) in objects { try jit.add(o) }
    let entries = try programs.map { p in unsafeBitCast(try jit.lookup(p.functions[0].name), to: EntryPoint.self) }
    codegenSeconds += Date().timeIntervalSince(t)
    jits.append(jit)
    return entries
  }

  /// `body(i)` for i in 0..<count on as many threads; the results in order, or the first error.
  static func inParallel<T>(_ count: Int, _ body: (Int) throws -> T) throws -> [T] {
    let results = UnsafeMutableBufferPointer<Result<T, Error>?>.allocate(capacity: count)
    results.initialize(repeating: nil)
    defer { results.deallocate() }
    // Each iteration writes only its own slot.
    let slots = SendableSlots(results)
    withoutActuallyEscaping(body) { body in
      let box = SendableBody(body)
      DispatchQueue.concurrentPerform(iterations: count) { i in slots.buffer[i] = Result { try box.body(i) } }
    }
    return try results.map { try $0!.get() }
  }
}

private struct SendableSlots<T>: @unchecked Sendable {
  let buffer: UnsafeMutableBufferPointer<Result<T, Error>?>
  init(_ b: UnsafeMutableBufferPointer<Result<T, Error>?>) { buffer = b }
}

private struct SendableBody<T>: @unchecked Sendable {
  let body: (Int) throws -> T
  init(_ b: @escaping (Int) throws -> T) { body = b }
}
