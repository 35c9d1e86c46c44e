import GraphIR
import Passes

/// Programs that measure the target's kernels alone, for `cnnc bench --kernels`: a GEMM exactly as the
/// lowering emits it for a layer (its blocking, panels and region), and the FMA peak of one core.
/// Everything lives in the arena; nothing reads a graph.
public enum KernelBenchmark {
  /// C[m x n] = A[m x k] * B[k x n] with A, B and C back to back in the arena, with the strides and row
  /// lengths a layer's GEMM has (`choice`), as `TiledGemm` emits it for the layer: the register-blocked
  /// kernel (the layer's runs per call, `choice.calls`, keep a small GEMM run many times a kernel).
  public static func gemm(_ choice: GemmChoice, target: Target) -> Program {
    let (m, n, k) = (choice.m, choice.n, choice.k)
    let (a, b, c) = operands(choice)
    let end = c + (m - 1) * choice.ldc + n
    // Scratch the GEMM takes (a bf16 GEMM's packed operands) follows the matrices.
    var e = emitter(target, arena: end)
    e.node = "gemm"
    e.body = e.tiledGemm(TiledGemm(m: m, n: n, k: k, a: (.arena, .c(a)), aRow: choice.aRow, aCol: choice.aCol, b: (.arena, .c(b)),
                                   ldb: choice.ldb, c: (.arena, .c(c)), ldc: choice.ldc, accumulate: false, calls: choice.calls))
    return program("gemm_\(m)x\(n)x\(k)", e, arena: end + e.tailFloats)
  }

  /// Where `gemm`'s program keeps A, B and C in its arena, in floats: A at 0, then B and C.
  public static func operands(_ choice: GemmChoice) -> (a: Int, b: Int, c: Int) {
    // Each matrix starts on a cache line, as the memory plan places values.
    func line(_ x: Int) -> Int { (x + 15) / 16 * 16 }
    let b = line((choice.m - 1) * choice.aRow + (choice.k - 1) * choice.aCol + 1)
    return (0, b, line(b + (choice.k - 1) * choice.ldb + choice.n))
  }

  /// Independent FMA chains the peak program runs: twice what latency x pipes needs, in registers.
  public static func peakChains(_ t: Target) -> Int { min(2 * t.minimumAccumulators, t.vectorRegisters - 2) }

  /// `steps` rounds of one FMA on each of `peakChains` vector accumulators (no memory traffic in the
  /// loop), then the accumulators stored: 2 x lanes x chains x steps floating-point operations.
  public static func fmaPeak(target: Target, steps: Int) -> Program {
    var e = emitter(target)
    let chains = peakChains(target)
    e.node = "peak"
    var body: [Stmt] = [.vlocal("x", .broadcast(.c(0.999_999))), .vlocal("y", .broadcast(.c(1e-7)))]
    body += (0..<chains).map { .vlocal("acc\($0)", .broadcast(.c(Float($0)))) }
    body.append(e.loop("s", steps) { _, _ in (0..<chains).map { .vset("acc\($0)", .fma(.local("x"), .local("acc\($0)"), .local("y"))) } })
    body += (0..<chains).map { .vstore(.arena, .c($0 * target.lanes), .local("acc\($0)"), lanes: target.lanes) }
    e.body = [.region("peak", body)]
    return program("fma_peak", e, arena: chains * target.lanes)
  }

  /// Floating-point operations of one run of `fmaPeak`.
  public static func peakFlops(target: Target, steps: Int) -> Double { Double(2 * target.lanes * peakChains(target) * steps) }

  static func emitter(_ target: Target, arena: Int = 0) -> Emitter {
    Emitter(graph: Graph(name: "bench"), shapes: ShapeTable(batch: 1, types: [:]),
            plan: MemoryPlan(placements: [:], scratch: [:], arenaFloats: arena, parameterFloats: 0), training: false, target: target, splitsKernels: true)
  }

  static func program(_ name: String, _ e: Emitter, arena: Int) -> Program {
    Program(graphName: "bench", batch: 1, functions: [Function(name: "bench_\(name)", body: [.kernel(e.node, [.comment("\(e.node) = benchmark()")] + e.body)])],
            arenaFloats: arena, parameters: [], parameterFloats: 0, imageFloats: 0, output: Placement(base: .arena, offset: 0, count: 0),
            loss: nil, classes: 0, target: e.target, gemms: e.gemms)
  }
}
