import ArgumentParser
import LLVMBackend
import Lowering

/// `--cpu`, `--target` and `--features`: the CPU the code is built for (the host when none is given).
struct TargetOptions: ParsableArguments {
  @Option(parsing: .unconditional, help: "LLVM CPU name to build for (x86-64-v3 for AVX2, x86-64-v4 for AVX-512, znver3, neoverse-n1, ...); default: this machine.")
  var cpu: String?

  @Option(name: .customLong("target"), parsing: .unconditional, help: "Target triple (x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu); default: this machine's.")
  var triple: String?

  @Option(parsing: .unconditional, help: "LLVM features added to the CPU's, comma-separated (+avx2,-avx512f).")
  var features: String?

  @Option(parsing: .unconditional, help: "Convolution algorithm: auto (the cheaper per conv pass by a cost model; `cnnc compile` prints which and why), im2col, winograd (F(2x2, 3x3), for every 3x3 stride-1 conv), or winograd_f4 (F(4x4, 3x3) where an inference pass allows it, else F(2x2, 3x3)).")
  var conv: ConvAlgorithm = .auto

  @Option(parsing: .unconditional, help: "Precision of the convolution and dense GEMMs' operands: fp32, or bf16 (rounded to bfloat16, accumulated in f32; by the CPU's bf16 dot product where it has one, `cnnc compile` says which). Weights, optimiser state, the loss and batch-norm statistics stay fp32.")
  var precision: Precision = .fp32

  /// The target; with `runsHere` one this machine can execute (else a clear error).
  func resolve(runsHere: Bool) throws -> Target {
    var t = try Target.resolve(cpu: cpu, triple: triple, features: features, runsHere: runsHere)
    t.convAlgorithm = conv
    t.precision = precision
    return t
  }
}

extension ConvAlgorithm: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}

/// Whether the JIT keeps and reuses object code between runs (`ObjectCache`).
struct CacheOptions: ParsableArguments {
  @Flag(name: .customLong("no-cache"), help: "Compile every module: read and write no cached object code (kept in $CNNC_CACHE, else $XDG_CACHE_HOME/cnnc or ~/.cache/cnnc, under objects/).")
  var disabled = false

  /// The cache the JIT uses, or nil; a cache directory that others could write is not used, with a warning.
  var cache: ObjectCache? {
    guard !disabled else { return nil }
    let cache = ObjectCache(directory: ObjectCache.defaultDirectory())
    if let refusal = cache.refusal {
      printError("warning: not using the object cache: \(refusal) (cnnc executes what it holds)\n")
      return nil
    }
    return cache
  }
}
