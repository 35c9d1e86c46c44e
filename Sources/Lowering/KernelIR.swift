/// The backend-neutral kernel program: loop nests over flat buffers with static shapes and
/// constant offsets, plus GEMM calls. Both back ends render exactly this; no kernel is written twice.

/// The buffers an entry point receives: every tensor is an offset into one of them.
public enum Base: String, CaseIterable, Sendable {
  /// Parameters in `state_dict` order, then gradients, Adam's m and v (or SGD's momentum) in the same layout.
  case params, grads, m, v
  /// Activations, saved values and scratch of one step (the planned arena).
  case arena
  /// What an inference program derives from the weights once per set of weights (`Emitter.prepare`: Winograd's
  /// transformed kernels, packed weight matrices): one buffer every arena running the program shares, since
  /// calls only read it. A model's largest buffer after its weights (F(4x4, 3x3) kernels take 4x the weights).
  case prepared
  /// The normalised input batch, NCHW.
  case images
  /// The batch's labels (int32).
  case labels
}

/// Integer (index) expressions; 64-bit.
public indirect enum IExpr: Hashable, Sendable {
  case c(Int)
  case v(String)
  case add(IExpr, IExpr)
  case mul(IExpr, IExpr)
  case div(IExpr, Int)
  case rem(IExpr, Int)
  /// labels[i], widened.
  case label(IExpr)
  /// A float holding an exact small integer (a saved argmax), truncated.
  case ofFloat(FExpr)
  /// The entry point's step argument (1-based count of updates, including this one).
  case step

  public static func + (a: IExpr, b: IExpr) -> IExpr {
    if case .c(0) = a { return b }
    if case .c(0) = b { return a }
    if case .c(let x) = a, case .c(let y) = b { return .c(x + y) }
    return .add(a, b)
  }
  public static func + (a: IExpr, b: Int) -> IExpr { a + .c(b) }
  public static func * (a: IExpr, b: IExpr) -> IExpr { .mul(a, b) }
  public static func * (a: IExpr, b: Int) -> IExpr {
    if b == 1 { return a }
    if b == 0 { return .c(0) }
    if case .c(let x) = a { return .c(x * b) }
    return .mul(a, .c(b))
  }
}

/// Float expressions.
public indirect enum FExpr: Hashable, Sendable {
  case c(Float)
  case load(Base, IExpr)
  case local(String)
  case add(FExpr, FExpr)
  case sub(FExpr, FExpr)
  case mul(FExpr, FExpr)
  case div(FExpr, FExpr)
  case max(FExpr, FExpr)
  case exp(FExpr)
  case log(FExpr)
  case sqrt(FExpr)
  case select(Cond, FExpr, FExpr)
  case ofInt(IExpr)
  /// The entry point's learning-rate argument.
  case learningRate
  /// The bfloat16 roundings of `low` and `high` packed into one float's 32 bits, `low` in the low half (`BF16`):
  /// a pair of GEMM operands along K for `VExpr.dotBF16`, not a number.
  case bf16Pair(FExpr, FExpr)
  /// Rounded to the nearest integer, half to even.
  case round(FExpr)
  /// Four floats holding integers in -128...255 as the bytes of one float's 32 bits, the first in the low byte
  /// (two's complement): a quad of int8 GEMM operands along K for `dotU8S8`, not a number.
  case bytes(FExpr, FExpr, FExpr, FExpr)
  /// The float nearest the 32-bit integer whose bits the operand holds (an int8 GEMM's sum).
  case fromInt32(FExpr)
  /// acc + the four products of a's bytes (unsigned) and b's bytes (signed), in 32-bit integers that wrap; acc
  /// and the result are integers' bits (`VExpr.dotU8S8`'s lane). `pairsFit16`: the signed bytes are within ±64
  /// (`Quantization.pairsFitInt16`), so any two products sum within Int16.
  case dotU8S8(FExpr, FExpr, FExpr, pairsFit16: Bool)

  public static func + (a: FExpr, b: FExpr) -> FExpr { .add(a, b) }
  public static func - (a: FExpr, b: FExpr) -> FExpr { .sub(a, b) }
  public static func * (a: FExpr, b: FExpr) -> FExpr { .mul(a, b) }
  public static func / (a: FExpr, b: FExpr) -> FExpr { .div(a, b) }
}

/// Conditions.
public indirect enum Cond: Hashable, Sendable {
  case ilt(IExpr, IExpr)
  case ieq(IExpr, IExpr)
  case fgt(FExpr, FExpr)
  case and(Cond, Cond)
  /// Unsigned 64-bit a >= b (the dropout draw against its threshold).
  case uge(UExpr, UExpr)
}

/// Unsigned 64-bit expressions with wrapping arithmetic: the dropout RNG, written in the kernel IR so the
/// back ends only render integer arithmetic.
public indirect enum UExpr: Hashable, Sendable {
  case c(UInt64)
  /// The entry point's seed and step arguments, as bit patterns.
  case seed
  case step
  /// An index expression's bit pattern.
  case index(IExpr)
  /// A 64-bit local declared by `Stmt.ulocal`.
  case local(String)
  case xor(UExpr, UExpr)
  case add(UExpr, UExpr)
  case mul(UExpr, UExpr)
  /// Logical shift right by a constant.
  case shr(UExpr, Int)
}

/// Vector expressions over the program's `lanes` floats, one register of its target (the GEMM micro-kernels
/// and the elementwise loops `vectorizeElementwiseLoops` widens). Every lane rounds as the scalar would.
public indirect enum VExpr: Hashable, Sendable {
  case zero
  /// `lanes` contiguous floats from buffer[i]; the remaining lanes are 0 (a masked load).
  case load(Base, IExpr, lanes: Int)
  /// One float in every lane.
  case broadcast(FExpr)
  case local(String)
  /// a * b + c, rounded once.
  case fma(VExpr, VExpr, VExpr)
  case add(VExpr, VExpr)
  case sub(VExpr, VExpr)
  case mul(VExpr, VExpr)
  case div(VExpr, VExpr)
  /// Per lane b > a ? b : a, the scalar `max`'s compare and select (NaN handled alike).
  case max(VExpr, VExpr)
  case sqrt(VExpr)
  /// Per lane p > q ? a : b.
  case selectGreater(VExpr, VExpr, VExpr, VExpr)
  /// Per lane, `FExpr.bf16Pair` of the lanes of `low` and `high`.
  case bf16Pair(VExpr, VExpr)
  /// The 2 x lanes floats of `first` then `second` as pairs in order: lane i is `FExpr.bf16Pair` of elements 2i and
  /// 2i + 1 (a row contiguous along K packed for `dotBF16`; `vcvtne2ps2bf16`'s layout).
  case bf16Pack(VExpr, VExpr)
  /// Per lane acc + a.high * b.high, then + a.low * b.low, where a and b hold `bf16Pair`s: each step rounded once
  /// to f32, a subnormal accumulator or sum taken as zero of its sign (`BF16.dot`). The bf16 dot product's
  /// arithmetic (AVX512_BF16's `vdpbf16ps`, measured bit for bit on Zen 4), so a target without it computes
  /// the same bits with FMAs.
  case dotBF16(VExpr, VExpr, VExpr)
  /// Per lane, `FExpr.round`.
  case round(VExpr)
  /// Per lane, `FExpr.bytes` of the four vectors' lanes.
  case bytes(VExpr, VExpr, VExpr, VExpr)
  /// Per lane, `FExpr.fromInt32`.
  case fromInt32(VExpr)
  /// The 4 x lanes floats of the four vectors in order, each an integer in -128...255, as bytes: lane i holds
  /// elements 4i ..< 4i + 4 (`FExpr.bytes` of four consecutive elements; a row of steps packed along K).
  case packBytes(VExpr, VExpr, VExpr, VExpr)
  /// Per lane, `FExpr.dotU8S8`: AVX512_VNNI's `vpdpbusd` (`Target.int8Dot`); else, on x86, pairs of products
  /// summed to 16 bits (`pmaddubsw`, exact when `pairsFit16`) or the bytes widened to 16 bits (`pmaddwd`), then
  /// summed to 32; elsewhere the same integers by shifts and multiplies.
  case dotU8S8(VExpr, VExpr, VExpr, pairsFit16: Bool)

  /// The operands, in order.
  public var operands: [VExpr] {
    switch self {
    case .zero, .load, .broadcast, .local: []
    case .fma(let a, let b, let c): [a, b, c]
    case .add(let a, let b), .sub(let a, let b), .mul(let a, let b), .div(let a, let b), .max(let a, let b): [a, b]
    case .sqrt(let a): [a]
    case .selectGreater(let p, let q, let a, let b): [p, q, a, b]
    case .bf16Pair(let a, let b), .bf16Pack(let a, let b): [a, b]
    case .dotBF16(let acc, let a, let b), .dotU8S8(let acc, let a, let b, _): [acc, a, b]
    case .round(let a), .fromInt32(let a): [a]
    case .bytes(let a, let b, let c, let d), .packBytes(let a, let b, let c, let d): [a, b, c, d]
    }
  }
}

/// A GEMM: C[m x n] = A[m x k] * B[k x n] + beta * C, row-major, with optional transposes.
public struct Gemm: Hashable, Sendable {
  public var transA: Bool
  public var transB: Bool
  public var m: Int, n: Int, k: Int
  public var a: (Base, IExpr), lda: Int
  public var b: (Base, IExpr), ldb: Int
  public var beta: Float
  public var c: (Base, IExpr), ldc: Int

  /// Leading dimensions are raised to the row length when a matrix has a single row: such a stride is
  /// never used, but the library rejects a leading dimension below the row length and then computes
  /// nothing (a `dense(units: 1)` weight gradient, A = dY^T of one row, was never written).
  public init(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: (Base, IExpr), lda: Int, b: (Base, IExpr), ldb: Int,
              beta: Float, c: (Base, IExpr), ldc: Int) {
    func leading(_ ld: Int, rows: Int, cols: Int) -> Int {
      precondition(rows == 1 || ld >= cols, "GEMM leading dimension \(ld) below the row length \(cols)")
      return max(ld, cols, 1)
    }
    (self.transA, self.transB, self.m, self.n, self.k) = (transA, transB, m, n, k)
    (self.a, self.lda) = (a, leading(lda, rows: transA ? k : m, cols: transA ? m : k))
    (self.b, self.ldb) = (b, leading(ldb, rows: transB ? n : k, cols: transB ? k : n))
    (self.beta, self.c, self.ldc) = (beta, c, leading(ldc, rows: m, cols: n))
  }

  /// The CBLAS enumeration codes a library call passes (`CblasRowMajor`, `CblasNoTrans`, `CblasTrans`).
  public static let cblasRowMajor: Int32 = 101, cblasNoTrans: Int32 = 111, cblasTrans: Int32 = 112
  /// The CBLAS codes of this call: layout, then A's and B's transposition.
  public var cblasCodes: (layout: Int32, transA: Int32, transB: Int32) {
    (Self.cblasRowMajor, transA ? Self.cblasTrans : Self.cblasNoTrans, transB ? Self.cblasTrans : Self.cblasNoTrans)
  }

  public func hash(into h: inout Hasher) {
    h.combine(transA); h.combine(transB); h.combine(m); h.combine(n); h.combine(k)
    for (base, offset) in [a, b, c] { h.combine(base); h.combine(offset) }
    h.combine(lda); h.combine(ldb); h.combine(ldc); h.combine(beta)
  }

  public static func == (x: Gemm, y: Gemm) -> Bool {
    x.transA == y.transA && x.transB == y.transB && x.m == y.m && x.n == y.n && x.k == y.k && x.a == y.a
      && x.lda == y.lda && x.b == y.b && x.ldb == y.ldb && x.beta == y.beta && x.c == y.c && x.ldc == y.ldc
  }
}

/// Statements.
public indirect enum Stmt: Hashable, Sendable {
  /// for VAR in 0..<count
  case loop(String, Int, [Stmt])
  case store(Base, IExpr, FExpr)
  /// buffer[i] += value
  case accumulate(Base, IExpr, FExpr)
  /// Declares a mutable float local with an initial value (scoped to the enclosing block).
  case local(String, FExpr)
  case set(String, FExpr)
  case when(Cond, [Stmt])
  case gemm(Gemm)
  /// A comment naming the `.graph` statement the following code implements.
  case comment(String)
  /// Declares a vector local (scoped to the enclosing block).
  case vlocal(String, VExpr)
  case vset(String, VExpr)
  /// Stores the first `lanes` lanes of the value to buffer[i...] (a masked store when fewer than all).
  case vstore(Base, IExpr, VExpr, lanes: Int)
  /// Declares an immutable unsigned 64-bit local (scoped to the enclosing block).
  case ulocal(String, UExpr)
  /// Profiling: stores the monotonic clock in nanoseconds, as a 64-bit integer, into arena slot `slot`
  /// (every back end the same unit).
  case tick(Int)
  /// Code that must get the register file to itself (a GEMM's micro-kernels): a back end that can
  /// renders it as a function of its own, taking the enclosing loop variables it reads (`freeVariables`).
  /// Left inline, the register allocator keeps the surrounding loops' hoisted constants live through the
  /// micro-kernel and spills an accumulator instead (seen on AVX2 and AVX-512). It reads no float locals
  /// from outside.
  case region(String, [Stmt])
  /// The code of one `.graph` statement (or of the optimiser), named after it: a back end may compile it
  /// as a function of its own (the LLVM back end does, so the optimiser works on many small functions and
  /// JIT time grows linearly with the graph). It reads no loop variable or local from outside.
  case kernel(String, [Stmt])
  /// Runs the program's shared kernel NAME (`Program.sharedKernels`) with its parameters bound to these
  /// values, in order.
  case call(String, [Int])
  /// for VAR in 0..<count, the iterations shared among the threads of the pool the entry point was given
  /// (`EntryABI`'s `pool`), or run in order without one. The count is fixed when the program is lowered
  /// and the iterations write disjoint memory, so the arithmetic is the same on any number of threads.
  /// A back end renders the body as a function of its own (taking the entry's arguments and the enclosing
  /// loop variables it reads); it reads no float or vector local from outside.
  case parallel(String, Int, [Stmt])
  /// Code whose loops a back end leaves as written (no automatic vectorisation): the transforms of a
  /// layer's weights in a training step, which run once per batch. Their strided accesses cost LLVM's loop
  /// vectoriser more compile time before the first step (a Winograd weight gradient's kernel transform
  /// took half of its kernel's) than the loops take to run.
  case scalarLoops([Stmt])
}

/// Code that several kernels run with different constants (`shareIdenticalKernels`): a function of the
/// entry-point arguments and `parameters`, integer index variables free in `body`.
public struct SharedKernel: Equatable, Sendable {
  public var name: String
  public var parameters: [String]
  public var body: [Stmt]
}

extension Stmt {
  /// Statements in this one, counting itself (a measure of how much code it renders to).
  public var size: Int {
    switch self {
    case .loop(_, _, let body), .when(_, let body), .region(_, let body), .kernel(_, let body), .parallel(_, _, let body), .scalarLoops(let body):
      1 + body.reduce(0) { $0 + $1.size }
    default: 1
    }
  }

  /// The index variables `body` reads that no loop inside it binds, in first-use order.
  public static func freeVariables(_ body: [Stmt]) -> [String] {
    var seen: [String] = []
    func visit(_ s: Stmt, _ bound: Set<String>) {
      func use(_ names: [String]) {
        for n in names where !bound.contains(n) && !seen.contains(n) { seen.append(n) }
      }
      switch s {
      case .loop(let v, _, let body), .parallel(let v, _, let body): body.forEach { visit($0, bound.union([v])) }
      case .store(_, let i, let e), .accumulate(_, let i, let e): use(i.variables + e.variables)
      case .local(_, let e), .set(_, let e): use(e.variables)
      case .ulocal(_, let u): use(u.variables)
      case .when(let c, let body): use(c.variables); body.forEach { visit($0, bound) }
      case .gemm(let g): use(g.a.1.variables + g.b.1.variables + g.c.1.variables)
      case .comment, .tick: break
      case .vlocal(_, let v), .vset(_, let v): use(v.variables)
      case .vstore(_, let i, let v, _): use(i.variables + v.variables)
      case .region(_, let body), .kernel(_, let body), .scalarLoops(let body): body.forEach { visit($0, bound) }
      case .call: break
      }
    }
    body.forEach { visit($0, []) }
    return seen
  }
}

/// The one signature of every compiled entry point, `void NAME(params, grads, m, v, arena, prepared, images,
/// labels, lr, step, seed, pool)`, defined here and rendered from here by both back ends, the C header and the
/// listing (the runtime's `EntryPoint` is the same signature as a Swift type).
public enum EntryABI {
  /// What an argument is: a buffer of the program (`base`), or a scalar.
  public enum Kind: Sendable, Equatable {
    /// A float buffer the code may write.
    case floats
    /// A float buffer the code only reads (the images).
    case readOnlyFloats
    /// The int32 labels, read only.
    case labels
    /// The learning rate.
    case float
    /// The 1-based step, or the dropout seed.
    case int64
    /// The caller's thread pool (`PoolABI`), or null to run every `parallel` statement on the calling thread.
    case pool
  }

  public struct Argument: Sendable {
    public let name: String
    public let kind: Kind
    /// The buffer the argument is, for buffer arguments.
    public let base: Base?
  }

  public static let arguments: [Argument] = [
    Argument(name: "params", kind: .floats, base: .params), Argument(name: "grads", kind: .floats, base: .grads),
    Argument(name: "m", kind: .floats, base: .m), Argument(name: "v", kind: .floats, base: .v),
    Argument(name: "arena", kind: .floats, base: .arena), Argument(name: "prepared", kind: .floats, base: .prepared),
    Argument(name: "images", kind: .readOnlyFloats, base: .images),
    Argument(name: "labels", kind: .labels, base: .labels),
    Argument(name: "lr", kind: .float, base: nil), Argument(name: "step", kind: .int64, base: nil), Argument(name: "seed", kind: .int64, base: nil),
    Argument(name: "pool", kind: .pool, base: nil),
  ]

  /// The C view of the `pool` argument, for headers: the pool's first field is its `run` function, which
  /// returns once `task(context, i)` has run for every i in 0..<count, on whichever of its threads.
  public static let poolDeclaration = """
    typedef void (*cnnc_task)(void *context, int64_t index);
    typedef struct cnnc_pool {
      void (*run)(struct cnnc_pool *pool, cnnc_task task, void *context, int64_t count);
    } cnnc_pool;
    """

  /// The position of a named argument.
  public static func index(_ name: String) -> Int { arguments.firstIndex { $0.name == name }! }

  /// `(params, grads, ..., seed)`.
  public static var parameterList: String { "(" + arguments.map(\.name).joined(separator: ", ") + ")" }

  /// The arguments as `declare(argument)` pieces joined by ", " into lines of at most `width` characters
  /// (a renderer's parameter list; the last line without a trailing comma).
  public static func lines(width: Int, _ declare: (Argument) -> String) -> [String] {
    var lines: [String] = [], current = ""
    for piece in arguments.map(declare) {
      if !current.isEmpty, current.count + 2 + piece.count > width {
        lines.append(current + ",")
        current = piece
      } else {
        current = current.isEmpty ? piece : current + ", " + piece
      }
    }
    return lines + [current]
  }
}

/// One entry point: `void NAME` with the `EntryABI` arguments.
public struct Function: Equatable, Sendable {
  public var name: String
  public var body: [Stmt]
}

/// Where a tensor of the program lives.
public struct Placement: Equatable, Sendable {
  public var base: Base
  public var offset: Int
  public var count: Int
}

/// A lowered program: entry points plus the layout the runtime needs to call them.
public struct Program: Equatable, Sendable {
  public var graphName: String
  public var batch: Int
  public var functions: [Function]
  /// The kernels the functions' `.call` statements run.
  public var sharedKernels: [SharedKernel] = []
  /// Floats in the arena (activations, saved values and scratch).
  public var arenaFloats: Int
  /// Floats in the prepared buffer (`Base.prepared`; 0 for a program that prepares nothing, a training one).
  public var preparedFloats = 0
  /// Parameter layout in `state_dict` order: name, shape, offset (floats) into params/grads/m/v.
  public var parameters: [(name: String, shape: [Int], offset: Int)]
  public var parameterFloats: Int
  /// Buffers (non-learnable state) after the parameters in params: name, shape, offset (floats).
  public var buffers: [(name: String, shape: [Int], offset: Int)] = []
  public var bufferFloats = 0
  /// The batch statistics a training program leaves in the arena for the runtime to fold into buffers.
  public var statistics: [BatchStatistics] = []
  public var imageFloats: Int
  public var output: Placement
  public var loss: Placement?
  public var classes: Int
  /// With profiling, the kernels between ticks k and k+1, as (statement, `.graph` line or 0), and
  /// the arena offset (in floats) of the 64-bit timestamps.
  public var profile: [(name: String, op: String, line: Int)] = []
  public var profileOffset = 0
  /// The CPU the program is built for; its vectors are `target.lanes` floats wide.
  public var target: Target
  /// Every register-blocked GEMM, by `.graph` statement, with the blocking the target chose.
  public var gemms: [GemmChoice] = []
  /// The algorithm of every conv pass, by `.graph` statement, and why.
  public var convs: [ConvChoice] = []
  /// The layers split into parts for a pool (`Stmt.parallel`), by `.graph` statement.
  public var splits: [ParallelSplit] = []
  /// The `.graph` statements whose values the program keeps channels-last ([N, H, W, C]), in program order.
  public var channelsLast: [String] = []
  public var lanes: Int { target.lanes }

  public static func == (a: Program, b: Program) -> Bool {
    a.graphName == b.graphName && a.batch == b.batch && a.target == b.target && a.functions == b.functions && a.sharedKernels == b.sharedKernels && a.arenaFloats == b.arenaFloats
      && a.preparedFloats == b.preparedFloats
      && a.parameters.map(\.name) == b.parameters.map(\.name) && a.parameterFloats == b.parameterFloats
      && a.buffers.map(\.name) == b.buffers.map(\.name) && a.statistics == b.statistics
  }
}

/// A stateful op's statistics in a training program's arena and the buffers they update (see `StatefulOp`).
public struct BatchStatistics: Equatable, Sendable {
  /// The `.graph` statement.
  public var node: String
  /// Its secondary outputs, in the arena, and their suffixes (`mean`, `var`).
  public var values: [Placement]
  public var names: [String]
  /// Its buffers, in params.
  public var buffers: [Placement]
  /// Elements per channel the statistics of one program run are taken over.
  public var elements: Int
}

/// A layer a program splits for a pool: its `.graph` statement, the parts, and what they divide.
public struct ParallelSplit: Equatable, Sendable {
  public var node: String
  public var parts: Int
  public var by: String
}

/// One register-blocked GEMM of a program and the blocking chosen for it (printed by `cnnc compile`).
public struct GemmChoice: Equatable, Sendable {
  public var node: String
  public var m: Int, n: Int, k: Int
  /// A's strides and B's and C's row lengths, as the kernel reads them (padded rows included).
  public var aRow: Int, aCol: Int, ldb: Int, ldc: Int
  public var rows: Int, vectors: Int, kPanel: Int
  /// Runs per program call (see `TiledGemm.calls`): with them the GEMM is a kernel, not a library call.
  public var calls: Int
  public init(node: String, m: Int, n: Int, k: Int, aRow: Int, aCol: Int, ldb: Int, ldc: Int, rows: Int, vectors: Int, kPanel: Int, calls: Int = 1) {
    (self.node, self.m, self.n, self.k, self.calls) = (node, m, n, k, calls)
    (self.aRow, self.aCol, self.ldb, self.ldc) = (aRow, aCol, ldb, ldc)
    (self.rows, self.vectors, self.kPanel) = (rows, vectors, kPanel)
  }
}
