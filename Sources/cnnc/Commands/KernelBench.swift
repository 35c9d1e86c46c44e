import Foundation
import GraphIR
import LLVMBackend
import Lowering
import Runtime

/// `cnnc bench --kernels`: every register-blocked GEMM of one shard's training step, compiled alone for
/// the target and timed on one core, against that core's FMA peak measured by a generated loop of
/// independent FMAs (same target, same JIT). JSON.
enum KernelBench {
  /// Repeats of each timing; the best is kept (the others met interrupts or a busy neighbour).
  static let trials = 5
  /// Each timing runs a kernel at least this long.
  static let minimumSeconds = 0.05

  static func run(_ f: GraphFile, batch: Int, shards: Int, target: Target) throws -> String {
    var compiler = try JITCompiler(target: target)
    let step = try f.run { () throws(DiagnosticList) in try lower(f.graph, batch: batch / shards, mode: .gradients, target: target) }
    let peakSteps = 1 << 22
    let peakEntry = try compiler.compile([KernelBenchmark.fmaPeak(target: target, steps: peakSteps)])[0]
    let peak = KernelBenchmark.peakFlops(target: target, steps: peakSteps) / best(peakEntry, arenaFloats: 64 * target.lanes) / 1e9
    var rows: [String] = [], seen = Set<[Int]>()
    for gemm in step.gemms where seen.insert([gemm.m, gemm.n, gemm.k, gemm.aRow, gemm.aCol, gemm.ldb, gemm.ldc]).inserted {
      let p = KernelBenchmark.gemm(gemm, target: target)
      let entry = try compiler.compile([p])[0]
      let gflops = 2 * Double(gemm.m * gemm.n * gemm.k) / best(entry, arenaFloats: p.arenaFloats) / 1e9
      rows.append(String(format: "    {\"statement\": \"%@\", \"m\": %d, \"n\": %d, \"k\": %d, \"ldb\": %d, \"ldc\": %d, \"block\": \"%dx%d\", \"k_panel\": %d, \"gflops\": %.1f, \"fraction_of_fma_peak\": %.3f}",
                         gemm.node, gemm.m, gemm.n, gemm.k, gemm.ldb, gemm.ldc, gemm.rows, gemm.vectors, gemm.kPanel, gflops, gflops / peak))
    }
    return """
      {
        "kernels": {
          "target": {"cpu": "\(target.cpu)", "isa": "\(target.isa.rawValue)", "lanes": \(target.lanes), "registers": \(target.vectorRegisters)},
          "host_cpu": "\(Target.host().cpu)", "fma_peak_gflops_per_core": \(String(format: "%.1f", peak)),
          "gemms": [
      \(rows.joined(separator: ",\n"))
          ]
        }
      }
      """
  }

  /// Best seconds of one call over `trials` timings, each repeating the call for `minimumSeconds`.
  static func best(_ entry: EntryPoint, arenaFloats: Int) -> Double {
    // Aligned as the runtime's arenas are (a cache line), so vector stores split no line the training step's do not.
    let raw = UnsafeMutableRawPointer.allocate(byteCount: 4 * max(arenaFloats, 1), alignment: 64)
    defer { raw.deallocate() }
    let arena = raw.bindMemory(to: Float.self, capacity: max(arenaFloats, 1))
    // Small values that stay finite through any number of accumulations.
    for i in 0..<arenaFloats { arena[i] = Float(i % 7) * 1e-3 }
    entry(nil, nil, nil, nil, arena, nil, nil, nil, 0, 0, 0, nil)
    var fastest = Double.infinity
    for _ in 0..<trials {
      var calls = 0
      let start = Date()
      repeat {
        entry(nil, nil, nil, nil, arena, nil, nil, nil, 0, 0, 0, nil)
        calls += 1
      } while Date().timeIntervalSince(start) < minimumSeconds
      fastest = min(fastest, Date().timeIntervalSince(start) / Double(calls))
    }
    return fastest
  }
}
