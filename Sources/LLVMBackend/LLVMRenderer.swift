import CLLVM
import GraphIR
import Lowering

/// Renders a lowered `Program` as LLVM IR through the C API builder: one function per entry point
/// with `noalias` buffer arguments, constant shapes, loop nests with phis, vectors of the program's
/// width, and `cblas_sgemm` calls. The module names the program's target (triple, CPU, features).
public struct LLVMRenderer {
  let module: Module
  let ctx: LLVMContextRef
  let builder: LLVMBuilderRef
  let f32: LLVMTypeRef, i32: LLVMTypeRef, i64: LLVMTypeRef, ptr: LLVMTypeRef, i1: LLVMTypeRef
  /// <lanes x float>, the kernel IR's vector for the program being rendered.
  var vec: LLVMTypeRef
  var lanes: Int
  /// Whether the program's target has fused multiply-add.
  var fused = true
  /// Whether `VExpr.dotBF16` is the target's instruction (`Target.bf16Dot`).
  var bf16Dot = false
  /// Whether `VExpr.dotU8S8` is the target's instruction (`Target.int8Dot`).
  var int8Dot = false
  /// Whether x86's pair-summing multiplies serve `VExpr.dotU8S8` otherwise (`Target.int8Pairs`).
  var int8Pairs = false
  /// The program's CPU and features, as every function's `target-cpu` and `target-features` attributes.
  var cpu = (name: "", features: "")
  let entryType: LLVMTypeRef
  /// Where profiling timestamps go in the arena.
  var monotonicClock: Int32 = 1
  var profileOffset = 0

  /// Renders every function of every program into a new module.
  public static func render(_ programs: [Program], moduleName: String) -> Module {
    render(programs, moduleName: moduleName, partitions: 1)[0]
  }

  /// Renders the programs into `partitions` modules that can be optimised and compiled side by side:
  /// the entry points are in the first, each `.graph` statement's kernel in the module with the least
  /// code so far (a fixed, deterministic assignment), declared where it is called from.
  public static func render(_ programs: [Program], moduleName: String, partitions: Int) -> [Module] {
    let functions = programs.flatMap { p in p.functions.map { (p, $0, pieces($0)) } }
    let shared = programs.flatMap { p in p.sharedKernels.map { (p, $0) } }
    var load = [Int](repeating: 0, count: max(1, partitions)), owner: [String: Int] = [:]
    func assign(_ name: String, size: Int) {
      let m = load.indices.min { load[$0] < load[$1] }!
      owner[name] = m
      load[m] += size
    }
    for (_, k) in shared { assign(k.name, size: k.body.reduce(0) { $0 + $1.size }) }
    for (_, _, parts) in functions {
      for case .kernel(let name, let kernel) in parts { assign(name, size: kernel.size - 1) }
    }
    return (0..<load.count).map { (m: Int) -> Module in
      let module = Module(name: load.count == 1 ? moduleName : "\(moduleName).\(m)")
      var r = LLVMRenderer(module: module)
      if let t = programs.first?.target { LLVMSetTarget(module.module, t.triple) }
      for (p, k) in shared where owner[k.name] == m {
        r.configure(for: p)
        r.define(k)
      }
      for (p, f, parts) in functions {
        r.configure(for: p)
        r.render(f, parts, module: m, owner: owner)
      }
      r.finish()
      return module
    }
  }

  init(module: Module) {
    self.module = module
    ctx = module.llvmContext
    builder = LLVMCreateBuilderInContext(ctx)
    f32 = LLVMFloatTypeInContext(ctx)
    i32 = LLVMInt32TypeInContext(ctx)
    i64 = LLVMInt64TypeInContext(ctx)
    i1 = LLVMInt1TypeInContext(ctx)
    ptr = LLVMPointerTypeInContext(ctx, 0)
    lanes = 1
    vec = LLVMVectorType(f32, 1)
    let (pointer, float, int) = (ptr, f32, i64)
    var params: [LLVMTypeRef?] = EntryABI.arguments.map { a in a.base != nil || a.kind == .pool ? pointer : a.kind == .float ? float : int }
    entryType = LLVMFunctionType(LLVMVoidTypeInContext(ctx), &params, UInt32(params.count), 0)
  }

  // MARK: Per-function state

  /// What is in scope while rendering one function.
  struct Scope {
    var function: LLVMValueRef
    var entry: LLVMBasicBlockRef
    var bases: [Base: LLVMValueRef]
    var lr: LLVMValueRef, step: LLVMValueRef, seed: LLVMValueRef
    /// The entry's arguments in `EntryABI` order, to pass on to the functions this one calls.
    var arguments: [LLVMValueRef?]
    /// Inside `scalarLoops`: every loop's latch carries a loop ID that turns the loop vectoriser off.
    var scalarLoops = false
    /// The `.graph` statement being rendered: values and blocks are named after it (`conv1.acc`).
    var node = "entry"
    var vars: [[String: LLVMValueRef]] = [[:]]
    var locals: [[String: LLVMValueRef]] = [[:]]
    func variable(_ n: String) -> LLVMValueRef { vars.reversed().lazy.compactMap { $0[n] }.first! }
    func local(_ n: String) -> LLVMValueRef { locals.reversed().lazy.compactMap { $0[n] }.first! }
  }

  /// What an entry point is made of: statements of the entry itself (profiling timestamps) and kernels,
  /// one per `.kernel` statement (a `.graph` statement or the optimiser), numbered in order.
  enum Piece {
    case inline(Stmt)
    /// The kernel's function name, and the `.kernel` statement it renders.
    case kernel(String, Stmt)
  }

  static func pieces(_ f: Function) -> [Piece] {
    var count = 0
    return f.body.map { st in
      guard case .kernel(let name, let body) = st else { return .inline(st) }
      // A kernel that only calls a shared kernel is that call, made from the entry.
      if case let calls = body.filter({ if case .comment = $0 { false } else { true } }), calls.count == 1, case .call = calls[0] {
        return .inline(calls[0])
      }
      defer { count += 1 }
      return .kernel("\(f.name).k\(count).\(name)", st)
    }
  }

  /// Renders an entry point's share of module `module`: the entry itself in module 0, and the kernels
  /// `owner` puts here. Each kernel is a `noinline` function that takes the entry's arguments, called in
  /// order from the entry: the optimiser then works on many small functions, so JIT time grows linearly
  /// with the graph instead of with the square of one huge function's size. A kernel called from another
  /// module has external linkage there and a declaration in module 0.
  mutating func render(_ f: Function, _ parts: [Piece], module m: Int, owner: [String: Int]) {
    if m == 0 {
      let fn = function(f.name, internal: false)
      var s = scope(fn)
      for part in parts {
        switch part {
        case .inline(let st): emit(st, &s)
        case .kernel(let name, let kernel):
          let here = owner[name] == 0
          let k = function(name, internal: here)
          if here { define(k, [kernel]) }
          var args = entryArguments(fn)
          LLVMBuildCall2(builder, entryType, k, &args, UInt32(args.count), "")
        }
      }
      LLVMBuildRetVoid(builder)
    } else {
      for case .kernel(let name, let kernel) in parts where owner[name] == m { define(function(name, internal: false), [kernel]) }
    }
  }

  /// Takes the target and layout of the program whose code comes next.
  mutating func configure(for p: Program) {
    cpu = (p.target.cpu, p.target.features)
    profileOffset = p.profileOffset
    monotonicClock = p.target.monotonicClock
    lanes = p.lanes
    fused = p.target.fma
    bf16Dot = p.target.bf16Dot
    int8Dot = p.target.int8Dot
    int8Pairs = p.target.int8Pairs
    vec = LLVMVectorType(f32, UInt32(p.lanes))
  }

  /// A shared kernel's function (never inlined, so its copies stay one): the entry's arguments, then one
  /// i64 per parameter.
  func sharedFunction(_ name: String, parameters: Int) -> LLVMValueRef {
    LLVMGetNamedFunction(module.module, name) ?? function(name, internal: false, indices: parameters, neverInline: true)
  }

  /// Defines a shared kernel, its parameters bound as index variables.
  func define(_ k: SharedKernel) {
    let fn = sharedFunction(k.name, parameters: k.parameters.count)
    var s = scope(fn)
    s.node = k.name
    let first = EntryABI.arguments.count
    s.vars = [Dictionary(uniqueKeysWithValues: k.parameters.enumerated().map { ($1, LLVMGetParam(fn, UInt32(first + $0))!) })]
    for st in k.body { emit(st, &s) }
    LLVMBuildRetVoid(builder)
  }

  /// Gives a kernel function its body, leaving the builder where it was.
  func define(_ k: LLVMValueRef, _ body: [Stmt]) {
    let caller = LLVMGetInsertBlock(builder)
    var ks = scope(k)
    for st in body { emit(st, &ks) }
    LLVMBuildRetVoid(builder)
    if let caller { LLVMPositionBuilderAtEnd(builder, caller) }
  }

  /// A function of the entry-point type (plus `indices` trailing i64 arguments) with `noalias` buffers;
  /// an internal one is never inlined.
  func function(_ name: String, internal isInternal: Bool, indices: Int = 0, neverInline: Bool = false) -> LLVMValueRef {
    var type = entryType
    if indices > 0 {
      let count = Int(LLVMCountParamTypes(entryType))
      var params = [LLVMTypeRef?](repeating: nil, count: count)
      params.withUnsafeMutableBufferPointer { LLVMGetParamTypes(entryType, $0.baseAddress) }
      params += Array(repeating: i64, count: indices)
      type = LLVMFunctionType(LLVMVoidTypeInContext(ctx), &params, UInt32(params.count), 0)
    }
    let fn = module.addFunction(name, type)
    let noalias = LLVMCreateEnumAttribute(ctx, LLVMGetEnumAttributeKindForName("noalias", 7), 0)
    for (i, a) in EntryABI.arguments.enumerated() {
      LLVMSetValueName2(LLVMGetParam(fn, UInt32(i)), a.name, a.name.utf8.count)
      if a.base != nil { LLVMAddAttributeAtIndex(fn, UInt32(i + 1), noalias) }
    }
    let functionIndex = UInt32(bitPattern: Int32(LLVMAttributeFunctionIndex))
    // The loop vectoriser widens scalar loops (epilogues, exp) to the program's vectors, not to the narrower width
    // some CPUs' tuning prefers (256 bits on Sapphire Rapids): the kernels' own vectors are that wide already.
    let width = lanes > 1 ? "\(lanes * 32)" : ""
    for (key, value) in [("target-cpu", cpu.name), ("target-features", cpu.features), ("prefer-vector-width", width)] where !value.isEmpty {
      LLVMAddAttributeAtIndex(fn, functionIndex, LLVMCreateStringAttribute(ctx, key, UInt32(key.utf8.count), value, UInt32(value.utf8.count)))
    }
    if isInternal { LLVMSetLinkage(fn, LLVMInternalLinkage) }
    if isInternal || neverInline {
      let noinline = LLVMCreateEnumAttribute(ctx, LLVMGetEnumAttributeKindForName("noinline", 8), 0)
      LLVMAddAttributeAtIndex(fn, functionIndex, noinline)
    }
    return fn
  }

  /// The scope of a function body, with the builder at its entry block.
  func scope(_ fn: LLVMValueRef) -> Scope {
    let entry = LLVMAppendBasicBlockInContext(ctx, fn, "entry")!
    LLVMPositionBuilderAtEnd(builder, entry)
    var bases: [Base: LLVMValueRef] = [:]
    for (i, a) in EntryABI.arguments.enumerated() { if let b = a.base { bases[b] = LLVMGetParam(fn, UInt32(i)) } }
    func scalar(_ name: String) -> LLVMValueRef { LLVMGetParam(fn, UInt32(EntryABI.index(name))) }
    return Scope(function: fn, entry: entry, bases: bases, lr: scalar("lr"), step: scalar("step"), seed: scalar("seed"),
                 arguments: entryArguments(fn))
  }

  /// The entry-point arguments of `fn` (an entry, kernel or region function), to pass on in a call.
  func entryArguments(_ fn: LLVMValueRef) -> [LLVMValueRef?] {
    EntryABI.arguments.indices.map { LLVMGetParam(fn, UInt32($0)) }
  }

  /// Frees the builder once every function is rendered.
  func finish() { LLVMDisposeBuilder(builder) }

  // MARK: Statements

  func emit(_ st: Stmt, _ s: inout Scope) {
    switch st {
    case .comment:
      break  // LLVM IR keeps no comments; values are named after the kernel (`Scope.node`)
    case .kernel(let name, let body):
      let outer = s.node
      s.node = name
      for st in body { emit(st, &s) }
      s.node = outer
    case .region(let name, let body): emitRegion(name, body, &s)
    case .call(let name, let values):
      let fn = sharedFunction(name, parameters: values.count)
      var args = s.arguments + values.map { LLVMConstInt(i64, UInt64(bitPattern: Int64($0)), 1) }
      LLVMBuildCall2(builder, LLVMGlobalGetValueType(fn), fn, &args, UInt32(args.count), "")
    case .tick(let k): emitTick(k, s)
    case .loop(let v, let count, let body): emitLoop(v, count, body, &s)
    case .parallel(let v, let count, let body): emitParallel(v, count, body, &s)
    case .scalarLoops(let body):
      let outer = s.scalarLoops
      s.scalarLoops = true
      for st in body { emit(st, &s) }
      s.scalarLoops = outer
    case .vstore(let b, let i, let v, let lanes): emitVectorStore(b, i, v, lanes: lanes, s)
    case .when(let c, let body): emitWhen(c, body, &s)
    case .gemm(let g): emitGemm(g, s)
    case .store(let b, let i, let v):
      LLVMBuildStore(builder, fexpr(v, s), address(b, i, s))
    case .accumulate(let b, let i, let v):
      let a = address(b, i, s)
      LLVMBuildStore(builder, LLVMBuildFAdd(builder, LLVMBuildLoad2(builder, f32, a, ""), fexpr(v, s), ""), a)
    case .local(let name, let v):
      LLVMBuildStore(builder, fexpr(v, s), declare(name, f32, &s))
    case .set(let name, let v):
      LLVMBuildStore(builder, fexpr(v, s), s.local(name))
    case .ulocal(let name, let u):
      s.vars[s.vars.count - 1][name] = uexpr(u, s)
    case .vlocal(let name, let v):
      LLVMBuildStore(builder, vexpr(v, s), declare(name, vec, &s))
    case .vset(let name, let v):
      LLVMBuildStore(builder, vexpr(v, s), s.local(name))
    }
  }

  /// A region: a function of its own, called here with the entry's arguments and the loop variables it reads.
  func emitRegion(_ name: String, _ body: [Stmt], _ s: inout Scope) {
    let free = Stmt.freeVariables(body)
    let fn = outlined(name, body, indices: free, s)
    var args = s.arguments + free.map { s.variable($0) }
    LLVMBuildCall2(builder, LLVMGlobalGetValueType(fn), fn, &args, UInt32(args.count), "")
  }

  /// `body` as an internal, never-inlined function CALLER.NAME of the entry's arguments and then one i64
  /// per index variable in `indices`; the builder is left where it was.
  func outlined(_ name: String, _ body: [Stmt], indices: [String], _ s: Scope) -> LLVMValueRef {
    var length = 0
    let caller = String(cString: LLVMGetValueName2(s.function, &length))
    let fn = function("\(caller).\(name)", internal: true, indices: indices.count)
    let here = LLVMGetInsertBlock(builder)!
    var inner = scope(fn)
    inner.node = s.node
    let first = EntryABI.arguments.count
    inner.vars = [Dictionary(uniqueKeysWithValues: indices.enumerated().map { ($1, LLVMGetParam(fn, UInt32(first + $0))!) })]
    for st in body { emit(st, &inner) }
    LLVMBuildRetVoid(builder)
    LLVMPositionBuilderAtEnd(builder, here)
    return fn
  }

  /// A parallel loop. The body is a function of its own, like a region's, taking the index last; a task
  /// `void (ptr context, i64 index)` calls it with the arguments the caller left in `context` (a struct on
  /// its frame). With a pool the pool's `run` (its first field) runs the task for every index; without,
  /// this thread calls the body for each index in order.
  func emitParallel(_ v: String, _ count: Int, _ body: [Stmt], _ s: inout Scope) {
    guard count > 0 else { return }
    let free = Stmt.freeVariables([.parallel(v, count, body)])
    let here = LLVMGetInsertBlock(builder)!
    // The body, a region whose last index variable is the iteration's.
    let fn = outlined(v, body, indices: free + [v], s)
    var length = 0
    let caller = String(cString: LLVMGetValueName2(s.function, &length))
    let first = EntryABI.arguments.count
    // The context: the entry's arguments, then the free variables.
    var fields: [LLVMTypeRef?] = (0..<first).map { LLVMTypeOf(LLVMGetParam(fn, UInt32($0))) } + free.map { _ in i64 }
    let contextType = LLVMStructTypeInContext(ctx, &fields, UInt32(fields.count), 0)!
    var taskParameters: [LLVMTypeRef?] = [ptr, i64]
    let taskType = LLVMFunctionType(LLVMVoidTypeInContext(ctx), &taskParameters, 2, 0)!
    let task = module.addFunction("\(caller).\(v).task", taskType)
    LLVMSetLinkage(task, LLVMInternalLinkage)
    LLVMPositionBuilderAtEnd(builder, LLVMAppendBasicBlockInContext(ctx, task, "entry"))
    var passed: [LLVMValueRef?] = fields.indices.map { k in
      LLVMBuildLoad2(builder, fields[k], LLVMBuildStructGEP2(builder, contextType, LLVMGetParam(task, 0), UInt32(k), ""), "")
    }
    passed.append(LLVMGetParam(task, 1))
    LLVMBuildCall2(builder, LLVMGlobalGetValueType(fn), fn, &passed, UInt32(passed.count), "")
    LLVMBuildRetVoid(builder)
    // The call site: fill the context (allocated once, in the entry block), then run.
    LLVMPositionBuilderAtEnd(builder, here)
    let context = atEntry(s) { LLVMBuildAlloca(builder, contextType, "\(v).context")! }
    for (k, value) in (s.arguments + free.map { s.variable($0) }).enumerated() {
      LLVMBuildStore(builder, value, LLVMBuildStructGEP2(builder, contextType, context, UInt32(k), ""))
    }
    let pool = s.arguments[EntryABI.index("pool")]!
    let pooled = LLVMAppendBasicBlockInContext(ctx, s.function, "\(s.node).\(v).pool")!
    let serial = LLVMAppendBasicBlockInContext(ctx, s.function, "\(s.node).\(v).serial")!
    let done = LLVMAppendBasicBlockInContext(ctx, s.function, "\(s.node).\(v).done")!
    LLVMBuildCondBr(builder, LLVMBuildIsNull(builder, pool, ""), serial, pooled)
    LLVMPositionBuilderAtEnd(builder, pooled)
    var runParameters: [LLVMTypeRef?] = [ptr, ptr, ptr, i64]
    let runType = LLVMFunctionType(LLVMVoidTypeInContext(ctx), &runParameters, 4, 0)!
    let run = LLVMBuildLoad2(builder, ptr, pool, "run")
    var runArguments: [LLVMValueRef?] = [pool, task, context, LLVMConstInt(i64, UInt64(count), 0)]
    LLVMBuildCall2(builder, runType, run, &runArguments, 4, "")
    LLVMBuildBr(builder, done)
    LLVMPositionBuilderAtEnd(builder, serial)
    emitLoop(v, count, [], &s) { s, index in
      var args = s.arguments + free.map { s.variable($0) } + [index]
      LLVMBuildCall2(self.builder, LLVMGlobalGetValueType(fn), fn, &args, UInt32(args.count), "")
    }
    LLVMBuildBr(builder, done)
    LLVMPositionBuilderAtEnd(builder, done)
  }

  /// `make()` built at the start of the function's entry block (allocas there are allocated once per call).
  func atEntry(_ s: Scope, _ make: () -> LLVMValueRef) -> LLVMValueRef {
    let here = LLVMGetInsertBlock(builder)!
    if let first = LLVMGetFirstInstruction(s.entry) { LLVMPositionBuilderBefore(builder, first) } else { LLVMPositionBuilderAtEnd(builder, s.entry) }
    let value = make()
    LLVMPositionBuilderAtEnd(builder, here)
    return value
  }

  /// clock_gettime(CLOCK_MONOTONIC) into a { i64 seconds, i64 nanoseconds } timespec, stored as nanoseconds.
  func emitTick(_ k: Int, _ s: Scope) {
    var params: [LLVMTypeRef?] = [i32, ptr]
    let fnTy = LLVMFunctionType(i32, &params, 2, 0)!
    let clock = declared("clock_gettime", fnTy)
    var fields: [LLVMTypeRef?] = [i64, i64]
    let timespec = LLVMStructTypeInContext(ctx, &fields, 2, 0)!
    let ts = LLVMBuildAlloca(builder, timespec, "timespec")
    var args: [LLVMValueRef?] = [LLVMConstInt(i32, UInt64(monotonicClock), 0), ts]
    LLVMBuildCall2(builder, fnTy, clock, &args, 2, "")
    let seconds = LLVMBuildLoad2(builder, i64, LLVMBuildStructGEP2(builder, timespec, ts, 0, ""), "seconds")
    let nanos = LLVMBuildLoad2(builder, i64, LLVMBuildStructGEP2(builder, timespec, ts, 1, ""), "nanoseconds")
    let now = LLVMBuildAdd(builder, LLVMBuildMul(builder, seconds, LLVMConstInt(i64, 1_000_000_000, 0), ""), nanos, "tick")
    LLVMBuildStore(builder, now, address(.arena, .c(profileOffset + 2 * k), s))
  }

  /// A counted loop: a header block with the induction variable's phi, the body (and `extra`, given the
  /// induction variable), the latch's compare.
  func emitLoop(_ v: String, _ count: Int, _ body: [Stmt], _ s: inout Scope, extra: (inout Scope, LLVMValueRef) -> Void = { _, _ in }) {
    guard count > 0 else { return }
    let pre = LLVMGetInsertBlock(builder)!
    let head = LLVMAppendBasicBlockInContext(ctx, s.function, "\(s.node).\(v)")!
    let exit = LLVMAppendBasicBlockInContext(ctx, s.function, "\(s.node).\(v).end")!
    LLVMBuildBr(builder, head)
    LLVMPositionBuilderAtEnd(builder, head)
    let i = LLVMBuildPhi(builder, i64, "\(s.node).\(v)")!
    s.vars.append([v: i])
    s.locals.append([:])
    for b in body { emit(b, &s) }
    extra(&s, i)
    s.vars.removeLast()
    s.locals.removeLast()
    let next = LLVMBuildNSWAdd(builder, i, LLVMConstInt(i64, 1, 0), "\(v).next")!
    let latch = LLVMGetInsertBlock(builder)!
    var incoming: [LLVMValueRef?] = [LLVMConstInt(i64, 0, 0), next]
    var blocks: [LLVMBasicBlockRef?] = [pre, latch]
    LLVMAddIncoming(i, &incoming, &blocks, 2)
    let branch = LLVMBuildCondBr(builder, LLVMBuildICmp(builder, LLVMIntSLT, next, LLVMConstInt(i64, UInt64(count), 0), ""), head, exit)
    if s.scalarLoops { LLVMSetMetadata(branch, LLVMGetMDKindIDInContext(ctx, "llvm.loop", 9), LLVMMetadataAsValue(ctx, unvectorizedLoopID())) }
    LLVMPositionBuilderAtEnd(builder, exit)
  }

  /// A loop ID `!{!self, !{!"llvm.loop.vectorize.enable", i1 false}}`, the loop vectoriser's "leave this
  /// loop" hint. The first operand must be the node itself: a placeholder stands in, then is replaced.
  func unvectorizedLoopID() -> LLVMMetadataRef {
    let key = "llvm.loop.vectorize.enable"
    var hint: [LLVMMetadataRef?] = [LLVMMDStringInContext2(ctx, key, key.utf8.count), LLVMValueAsMetadata(LLVMConstInt(i1, 0, 0))]
    let placeholder = LLVMTemporaryMDNode(ctx, nil, 0)
    var operands: [LLVMMetadataRef?] = [placeholder, LLVMMDNodeInContext2(ctx, &hint, 2)]
    let id = LLVMMDNodeInContext2(ctx, &operands, 2)!
    LLVMMetadataReplaceAllUsesWith(placeholder, id)
    return id
  }

  /// A full vector store, or a masked one of the first `lanes` lanes.
  func emitVectorStore(_ b: Base, _ i: IExpr, _ v: VExpr, lanes: Int, _ s: Scope) {
    let value = vexpr(v, s), at = address(b, i, s)
    if lanes == self.lanes {
      LLVMSetAlignment(LLVMBuildStore(builder, value, at), 4)
    } else {
      var types: [LLVMTypeRef?] = [vec, ptr, i32, LLVMVectorType(i1, UInt32(self.lanes))]
      let fnTy = LLVMFunctionType(LLVMVoidTypeInContext(ctx), &types, 4, 0)!
      let fn = declared("llvm.masked.store.v\(self.lanes)f32.p0", fnTy)
      var args: [LLVMValueRef?] = [value, at, LLVMConstInt(i32, 4, 0), mask(lanes)]
      LLVMBuildCall2(builder, fnTy, fn, &args, 4, "")
    }
  }

  func emitWhen(_ c: Cond, _ body: [Stmt], _ s: inout Scope) {
    let then = LLVMAppendBasicBlockInContext(ctx, s.function, "\(s.node).then")!
    let done = LLVMAppendBasicBlockInContext(ctx, s.function, "\(s.node).endif")!
    LLVMBuildCondBr(builder, cond(c, s), then, done)
    LLVMPositionBuilderAtEnd(builder, then)
    s.locals.append([:])
    for b in body { emit(b, &s) }
    s.locals.removeLast()
    LLVMBuildBr(builder, done)
    LLVMPositionBuilderAtEnd(builder, done)
  }

  /// A library GEMM call (cblas_sgemm, resolved when the code is linked or JIT-compiled).
  func emitGemm(_ g: Gemm, _ s: Scope) {
    var argTypes: [LLVMTypeRef?] = [i32, i32, i32, i32, i32, i32, f32, ptr, i32, ptr, i32, f32, ptr, i32]
    let fnTy = LLVMFunctionType(LLVMVoidTypeInContext(ctx), &argTypes, 14, 0)!
    let callee = declared("cblas_sgemm", fnTy)
    func c32(_ v: Int) -> LLVMValueRef { LLVMConstInt(i32, UInt64(v), 0) }
    var args: [LLVMValueRef?] = [
      c32(Int(g.cblasCodes.layout)), c32(Int(g.cblasCodes.transA)), c32(Int(g.cblasCodes.transB)), c32(g.m), c32(g.n), c32(g.k),
      LLVMConstReal(f32, 1), address(g.a.0, g.a.1, s), c32(g.lda), address(g.b.0, g.b.1, s), c32(g.ldb),
      LLVMConstReal(f32, Double(g.beta)), address(g.c.0, g.c.1, s), c32(g.ldc),
    ]
    LLVMBuildCall2(builder, fnTy, callee, &args, 14, "")
  }

  /// The module's function `name` (an intrinsic or an external symbol), declared on first use.
  func declared(_ name: String, _ type: LLVMTypeRef) -> LLVMValueRef {
    LLVMGetNamedFunction(module.module, name) ?? module.addFunction(name, type)
  }

  /// A stack slot for a local, in the entry block so mem2reg turns it into a register.
  func declare(_ name: String, _ type: LLVMTypeRef, _ s: inout Scope) -> LLVMValueRef {
    let slot = atEntry(s) { LLVMBuildAlloca(builder, type, "\(s.node).\(name)")! }
    s.locals[s.locals.count - 1][name] = slot
    return slot
  }

  // MARK: Expressions

  /// <lanes x i1> with the first `set` lanes set.
  func mask(_ set: Int) -> LLVMValueRef {
    var bits: [LLVMValueRef?] = (0..<lanes).map { LLVMConstInt(i1, $0 < set ? 1 : 0, 0) }
    return LLVMConstVector(&bits, UInt32(lanes))
  }

  func vexpr(_ e: VExpr, _ s: Scope) -> LLVMValueRef {
    switch e {
    case .zero: return LLVMConstNull(vec)
    case .local(let n): return LLVMBuildLoad2(builder, vec, s.local(n), n)
    case .load(let b, let i, let lanes):
      let at = address(b, i, s)
      if lanes == self.lanes {
        let v = LLVMBuildLoad2(builder, vec, at, "")!
        LLVMSetAlignment(v, 4)
        return v
      }
      var types: [LLVMTypeRef?] = [ptr, i32, LLVMVectorType(i1, UInt32(self.lanes)), vec]
      let fnTy = LLVMFunctionType(vec, &types, 4, 0)!
      let fn = declared("llvm.masked.load.v\(self.lanes)f32.p0", fnTy)
      var args: [LLVMValueRef?] = [at, LLVMConstInt(i32, 4, 0), mask(lanes), LLVMConstNull(vec)]
      return LLVMBuildCall2(builder, fnTy, fn, &args, 4, "")
    case .broadcast(let f):
      let one = LLVMBuildInsertElement(builder, LLVMGetUndef(vec), fexpr(f, s), LLVMConstInt(i32, 0, 0), "")
      return LLVMBuildShuffleVector(builder, one, LLVMGetUndef(vec), LLVMConstNull(LLVMVectorType(i32, UInt32(lanes))), "")
    case .fma(let a, let b, let c):
      var types: [LLVMTypeRef?] = [vec, vec, vec]
      let fnTy = LLVMFunctionType(vec, &types, 3, 0)!
      // Without fused multiply-add in hardware, fmuladd lets the code generator multiply and add apart.
      let fn = declared(fused ? "llvm.fma.v\(lanes)f32" : "llvm.fmuladd.v\(lanes)f32", fnTy)
      var args: [LLVMValueRef?] = [vexpr(a, s), vexpr(b, s), vexpr(c, s)]
      return LLVMBuildCall2(builder, fnTy, fn, &args, 3, "")
    case .add(let a, let b): return LLVMBuildFAdd(builder, vexpr(a, s), vexpr(b, s), "")
    case .sub(let a, let b): return LLVMBuildFSub(builder, vexpr(a, s), vexpr(b, s), "")
    case .mul(let a, let b): return LLVMBuildFMul(builder, vexpr(a, s), vexpr(b, s), "")
    case .div(let a, let b): return LLVMBuildFDiv(builder, vexpr(a, s), vexpr(b, s), "")
    case .max(let a, let b):
      // Compare and select, as the scalar max.
      let x = vexpr(a, s), y = vexpr(b, s)
      return LLVMBuildSelect(builder, LLVMBuildFCmp(builder, LLVMRealOGT, y, x, ""), y, x, "")
    case .sqrt(let a):
      var types: [LLVMTypeRef?] = [vec]
      let fnTy = LLVMFunctionType(vec, &types, 1, 0)!
      var args: [LLVMValueRef?] = [vexpr(a, s)]
      return LLVMBuildCall2(builder, fnTy, declared("llvm.sqrt.v\(lanes)f32", fnTy), &args, 1, "")
    case .selectGreater(let p, let q, let a, let b):
      return LLVMBuildSelect(builder, LLVMBuildFCmp(builder, LLVMRealOGT, vexpr(p, s), vexpr(q, s), ""), vexpr(a, s), vexpr(b, s), "")
    case .bf16Pair(let a, let b): return bf16Pair(vexpr(a, s), vexpr(b, s), lanes: lanes)
    case .bf16Pack(let a, let b): return bf16Pack(vexpr(a, s), vexpr(b, s))
    case .dotBF16(let acc, let a, let b): return dotBF16(vexpr(acc, s), vexpr(a, s), vexpr(b, s))
    case .round(let a): return roundEven(vexpr(a, s), lanes: lanes)
    case .bytes(let a, let b, let c, let d): return bytes([a, b, c, d].map { vexpr($0, s) }, lanes: lanes)
    case .fromInt32(let a): return fromInt32(vexpr(a, s), lanes: lanes)
    case .dotU8S8(let acc, let a, let b, let fit): return dotU8S8(vexpr(acc, s), vexpr(a, s), vexpr(b, s), lanes: lanes, pairsFit16: fit)
    case .packBytes(let a, let b, let c, let d): return packBytes([a, b, c, d].map { vexpr($0, s) })
    }
  }

  func address(_ b: Base, _ i: IExpr, _ s: Scope) -> LLVMValueRef {
    var idx: [LLVMValueRef?] = [iexpr(i, s)]
    return LLVMBuildInBoundsGEP2(builder, b == .labels ? i32 : f32, s.bases[b]!, &idx, 1, b.rawValue)
  }

  func iexpr(_ e: IExpr, _ s: Scope) -> LLVMValueRef {
    switch e {
    case .c(let v): return LLVMConstInt(i64, UInt64(bitPattern: Int64(v)), 1)
    case .v(let n): return s.variable(n)
    case .add(let a, let b): return LLVMBuildNSWAdd(builder, iexpr(a, s), iexpr(b, s), "")
    case .mul(let a, let b): return LLVMBuildNSWMul(builder, iexpr(a, s), iexpr(b, s), "")
    case .div(let a, let d): return LLVMBuildSDiv(builder, iexpr(a, s), LLVMConstInt(i64, UInt64(d), 0), "")
    case .rem(let a, let d): return LLVMBuildSRem(builder, iexpr(a, s), LLVMConstInt(i64, UInt64(d), 0), "")
    case .label(let i): return LLVMBuildSExt(builder, LLVMBuildLoad2(builder, i32, address(.labels, i, s), "label"), i64, "")
    case .ofFloat(let f): return LLVMBuildFPToSI(builder, fexpr(f, s), i64, "")
    case .step: return s.step
    }
  }

  func intrinsic(_ name: String, _ args: [LLVMValueRef]) -> LLVMValueRef {
    var types = [LLVMTypeRef?](repeating: f32, count: args.count)
    let fnTy = LLVMFunctionType(f32, &types, UInt32(args.count), 0)!
    let fn = declared(name, fnTy)
    var a: [LLVMValueRef?] = args
    return LLVMBuildCall2(builder, fnTy, fn, &a, UInt32(args.count), "")
  }

  func fexpr(_ e: FExpr, _ s: Scope) -> LLVMValueRef {
    switch e {
    case .c(let v): return LLVMConstReal(f32, Double(v))
    case .load(let b, let i): return LLVMBuildLoad2(builder, f32, address(b, i, s), "")
    case .local(let n): return LLVMBuildLoad2(builder, f32, s.local(n), n)
    case .add(let a, let b): return LLVMBuildFAdd(builder, fexpr(a, s), fexpr(b, s), "")
    case .sub(let a, let b): return LLVMBuildFSub(builder, fexpr(a, s), fexpr(b, s), "")
    case .mul(let a, let b): return LLVMBuildFMul(builder, fexpr(a, s), fexpr(b, s), "")
    case .div(let a, let b): return LLVMBuildFDiv(builder, fexpr(a, s), fexpr(b, s), "")
    case .max(let a, let b):
      // max as compare-and-select (not maxnum) so NaN handling matches the reference's `max`.
      let x = fexpr(a, s), y = fexpr(b, s)
      return LLVMBuildSelect(builder, LLVMBuildFCmp(builder, LLVMRealOGT, y, x, ""), y, x, "")
    case .exp(let a): return exponential(fexpr(a, s))
    case .log(let a): return intrinsic("llvm.log.f32", [fexpr(a, s)])
    case .sqrt(let a): return intrinsic("llvm.sqrt.f32", [fexpr(a, s)])
    case .select(let c, let a, let b): return LLVMBuildSelect(builder, cond(c, s), fexpr(a, s), fexpr(b, s), "")
    case .ofInt(let i): return LLVMBuildSIToFP(builder, iexpr(i, s), f32, "")
    case .learningRate: return s.lr
    case .bf16Pair(let a, let b): return bf16Pair(fexpr(a, s), fexpr(b, s), lanes: 1)
    case .round(let a): return roundEven(fexpr(a, s), lanes: 1)
    case .bytes(let a, let b, let c, let d): return bytes([a, b, c, d].map { fexpr($0, s) }, lanes: 1)
    case .fromInt32(let a): return fromInt32(fexpr(a, s), lanes: 1)
    case .dotU8S8(let acc, let a, let b, let fit): return dotU8S8(fexpr(acc, s), fexpr(a, s), fexpr(b, s), lanes: 1, pairsFit16: fit)
    }
  }

  func cond(_ c: Cond, _ s: Scope) -> LLVMValueRef {
    switch c {
    case .ilt(let a, let b): return LLVMBuildICmp(builder, LLVMIntSLT, iexpr(a, s), iexpr(b, s), "")
    case .ieq(let a, let b): return LLVMBuildICmp(builder, LLVMIntEQ, iexpr(a, s), iexpr(b, s), "")
    case .fgt(let a, let b): return LLVMBuildFCmp(builder, LLVMRealOGT, fexpr(a, s), fexpr(b, s), "")
    case .and(let a, let b): return LLVMBuildAnd(builder, cond(a, s), cond(b, s), "")
    case .uge(let a, let b): return LLVMBuildICmp(builder, LLVMIntUGE, uexpr(a, s), uexpr(b, s), "")
    }
  }

  /// The splitmix64 finaliser, inline.
  /// Wrapping unsigned 64-bit arithmetic (the dropout RNG); locals are SSA values in the loop-variable scope.
  func uexpr(_ e: UExpr, _ s: Scope) -> LLVMValueRef {
    switch e {
    case .c(let v): LLVMConstInt(i64, v, 0)
    case .seed: s.seed
    case .step: s.step
    case .index(let i): iexpr(i, s)
    case .local(let n): s.variable(n)
    case .xor(let a, let b): LLVMBuildXor(builder, uexpr(a, s), uexpr(b, s), "")
    case .add(let a, let b): LLVMBuildAdd(builder, uexpr(a, s), uexpr(b, s), "")
    case .mul(let a, let b): LLVMBuildMul(builder, uexpr(a, s), uexpr(b, s), "")
    case .shr(let a, let k): LLVMBuildLShr(builder, uexpr(a, s), LLVMConstInt(i64, UInt64(k), 0), "")
    }
  }
}
