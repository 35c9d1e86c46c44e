/// The CPU a program is built for: made once (from the host, or from `--cpu`/`--target`/`--features`)
/// and passed down, so every kernel decision (vector width, register blocking, cache panels, the library
/// threshold, the conv image group, the inference chunk) follows from it and from nothing else.
/// A pure value; detecting the host and checking an override against it live in the LLVM back end.
public struct Target: Equatable, Hashable, Sendable, CustomStringConvertible {
  /// The vector instruction set the kernels are shaped for.
  public enum ISA: String, Sendable, Comparable, CaseIterable {
    /// x86-64 without AVX2 + FMA (SSE through AVX): 128-bit vectors are all the kernels assume.
    case sse
    /// AVX2 + FMA: 256-bit vectors, 16 registers.
    case avx2
    /// AVX-512 F/BW/DQ/VL with 512-bit vectors enabled (`+evex512` on LLVM 19): 32 registers.
    case avx512
    /// AArch64 Advanced SIMD: 128-bit vectors, 32 registers.
    case neon

    public static func < (a: ISA, b: ISA) -> Bool {
      let order: [ISA] = [.sse, .avx2, .avx512, .neon]
      return order.firstIndex(of: a)! < order.firstIndex(of: b)!
    }

    /// Vector register width in bits.
    public var vectorBits: Int { self == .avx512 ? 512 : self == .avx2 ? 256 : 128 }
    /// Architectural vector registers the register allocator can use.
    public var vectorRegisters: Int { self == .avx512 || self == .neon ? 32 : 16 }
  }

  /// Where the description came from.
  public enum Origin: String, Sendable { case host, override }

  public var triple: String
  /// The LLVM CPU name (`znver3`, `x86-64-v3`, `neoverse-n1`).
  public var cpu: String
  /// LLVM feature string added to the CPU's own features ("" for the CPU's defaults).
  public var features: String
  public var isa: ISA
  /// Fused multiply-add (every ISA class but `sse`).
  public var fma: Bool
  /// Masked vector loads and stores in hardware (AVX-512); elsewhere a partial vector costs a few more
  /// instructions, so the blocking prefers shapes without tails.
  public var maskedMemory: Bool
  /// Data cache bytes per core (L3: the core's share of the shared cache) and physical cores.
  public var l1: Int, l2: Int, l3: Int, cores: Int
  public var origin: Origin
  /// Every GEMM a generated kernel, none a BLAS library call: the code needs only libc and libm (objects
  /// for other machines, `cnnc compile --self-contained`).
  public var selfContained = false
  /// How 3x3 stride-1 convolutions are lowered (`--conv`): by the cost rule of `ConvCost`, or one algorithm for every conv that has it.
  public var convAlgorithm = ConvAlgorithm.auto
  /// The operands' precision of the register-blocked GEMMs (`--precision`).
  public var precision = Precision.fp32
  /// A bf16 dot product in hardware (AVX512_BF16's `vdpbf16ps`, 512-bit vectors): two bf16 products per f32 lane
  /// and instruction, twice the multiply-adds of an FMA. Without it bf16 GEMMs convert their operands and use
  /// FMAs, to the same bits (`VExpr.dotBF16`), at no gain in speed.
  public var bf16Dot = false
  /// A u8 x s8 dot product in hardware (AVX512_VNNI's `vpdpbusd`, 512-bit vectors): four 8-bit products per
  /// 32-bit lane and instruction. Without it int8 convs compute the same integers otherwise (`int8Pairs`).
  public var int8Dot = false
  /// x86's multiplies that sum pairs of products at the vector width: `pmaddubsw` (u8 x s8 pairs to 16 bits, with
  /// saturation: exact for reduced-range weights, `Quantization.pairsFitInt16`) and `pmaddwd` (s16 pairs to 32
  /// bits, exact for any weights once the bytes are widened). AVX2 has them at 256 bits, AVX-512 (BW) at 512, SSE2
  /// has `pmaddwd` at 128 (SSSE3's `pmaddubsw` is not assumed). Elsewhere int8 GEMMs use shifts and multiplies.
  public var int8Pairs: Bool { isa == .avx2 || isa == .avx512 }

  public init(triple: String, cpu: String, features: String, isa: ISA, l1: Int, l2: Int, l3: Int, cores: Int, origin: Origin) {
    (self.triple, self.cpu, self.features, self.isa) = (triple, cpu, features, isa)
    fma = isa != .sse
    maskedMemory = isa == .avx512
    (self.l1, self.l2, self.l3, self.cores, self.origin) = (max(l1, 4096), max(l2, l1, 65536), max(l3, 0), max(cores, 1), origin)
  }

  /// Whether code for this target runs on `other`'s machines: the same architecture and operating system
  /// (the vendor field of the triple does not matter: x86_64-unknown-linux-gnu runs where x86_64-pc-linux-gnu does).
  public func sameMachineKind(as other: Target) -> Bool {
    func arch(_ t: String) -> String { let a = String(t.split(separator: "-").first ?? ""); return a == "arm64" ? "aarch64" : a }
    func os(_ t: String) -> String { t.contains("linux") ? "linux" : t.contains("apple") || t.contains("darwin") ? "darwin" : t }
    return arch(triple) == arch(other.triple) && os(triple) == os(other.triple)
  }

  /// f32 lanes of one vector register: the width of every vector in the kernel IR.
  public var lanes: Int { isa.vectorBits / 32 }
  public var vectorRegisters: Int { isa.vectorRegisters }
  public var vectorBytes: Int { isa.vectorBits / 8 }

  /// Independent accumulators the FMA units need to stay busy: latency (4 cycles on every core this
  /// targets: Zen 1-5, Skylake and later, Neoverse N1/V1) times two FMA pipes.
  public var minimumAccumulators: Int { 4 * 2 }

  public var description: String {
    "\(cpu) (\(triple), \(isa.rawValue), \(lanes) f32 lanes, \(vectorRegisters) vector registers\(origin == .host ? ", host" : "")\(selfContained ? ", self-contained" : "")\(convAlgorithm == .auto ? "" : ", conv \(convAlgorithm.rawValue)")\(precisionDescription))"
  }

  /// ", bf16 (dot product)" or ", bf16 (converted, f32 FMAs)" for a bf16 program; "" for f32.
  var precisionDescription: String {
    precision == .fp32 ? "" : bf16Dot ? ", bf16 GEMMs by the bf16 dot product" : ", bf16 GEMMs by f32 FMAs (no bf16 dot product)"
  }

  /// Nominal caches for a named CPU that is not the host: a typical core of that class (L3 as one core's
  /// share), so a program built for a named CPU is the same on every build machine.
  public static func nominalCaches(_ isa: ISA) -> (l1: Int, l2: Int, l3: Int) {
    switch isa {
    case .sse: (32 << 10, 256 << 10, 2 << 20)
    case .avx2: (32 << 10, 512 << 10, 4 << 20)
    case .avx512: (32 << 10, 1 << 20, 4 << 20)
    case .neon: (64 << 10, 1 << 20, 1 << 20)
    }
  }

  /// A named target with nominal caches, for tests and fixed renderings (Generated/).
  public static func named(_ cpu: String, isa: ISA, triple: String? = nil, features: String = "") -> Target {
    let c = nominalCaches(isa)
    return Target(triple: triple ?? (isa == .neon ? "aarch64-unknown-linux-gnu" : "x86_64-unknown-linux-gnu"), cpu: cpu,
                  features: features, isa: isa, l1: c.l1, l2: c.l2, l3: c.l3, cores: 2, origin: .override)
  }

  // MARK: Kernel decisions (each documented where it is chosen)

  /// Below this many multiply-adds a GEMM is a library call: its kernel's share of the JIT time (about a
  /// millisecond per micro-kernel copy) is more than it could save over the library at run time.
  /// Self-contained code has no library to call, and a bf16 program's GEMMs are all bf16 (the library's are f32).
  public var libraryGemmBelow: Int { selfContained || precision == .bf16 ? 0 : 1 << 20 }

  /// The most images one conv GEMM covers: enough columns that the column loop of the micro-kernel runs
  /// long, while the column matrix of a group stays within the core's L2 plus its share of L3 (it is
  /// written by im2col and read once per row block). 16 was measured best for SimpleCNN training on Zen 1-5.
  /// An inference program keeps a group's columns within `inferenceColumnShareOfL2` of L2, so a conv whose one
  /// image is more runs an image at a time, in bands of rows (`rowBand`), its epilogue in the micro-kernel: a
  /// host's L3 share (130 MB a core on a 2-vCPU guest of a large server) let ResNet-18's stem and 512-channel convs
  /// take groups of 4 images at 1.5-3x the time per image of one.
  public func convImageGroup(columnBytesPerImage: Int, training: Bool) -> Int {
    let budget = training ? l2 + l3 : Int(Double(l2) * Self.inferenceColumnShareOfL2)
    return max(1, min(16, budget / max(1, columnBytesPerImage)))
  }

  /// The share of L2 an inference conv's column matrix for a group of images may take.
  public static let inferenceColumnShareOfL2 = 0.5

  /// The most equal parts an inference program splits a large layer into, for the threads of a pool
  /// (`Stmt.parallel`): one per physical core, at most `maxParallelParts`. The partition is fixed when the
  /// program is lowered; the threads that run it change nothing in its arithmetic.
  public var parallelParts: Int { min(cores, Self.maxParallelParts) }
  /// One image's layers have too little work for more parts than this: each part would be a few microseconds.
  public static let maxParallelParts = 8
  /// Multiply-adds per call below which a layer stays whole: its parts would take less time than a fork
  /// and join of the pool (about a microsecond each with the workers awake, several when they sleep).
  public static let parallelWorkBelow = 1 << 18

  /// Images per inference call: as many as keep one chunk's arena within L2 plus the L3 share, so
  /// activations stay in cache between layers; at most 64 (measured at batch 1000 on Zen 4: 64 beat
  /// 100, 128 and 250 by 4-8%). No floor: at 224x224 an image has thousands of columns for the GEMMs, and
  /// the floor of 16 this had (8 images a core) ran MobileNetV2 and EfficientNet-B0 at batch 16 from memory,
  /// 1.15-1.3x the time per image of chunks of their cache-sized 2-4 (Zen 4).
  public func inferenceChunk(activationBytesPerImage: Int) -> Int {
    max(1, min(64, (l2 + l3) / max(1, activationBytesPerImage)))
  }
}

/// The precision of the register-blocked GEMMs' operands (`--precision`). bf16 rounds both operands to bfloat16
/// (round to nearest even, subnormals to zero), packs pairs along K into one 32-bit word, and accumulates in f32
/// (`VExpr.dotBF16`); everything else (the rest of the arithmetic, the weights, optimiser state, batch norm's
/// statistics, the loss) stays f32. bf16 keeps f32's exponent range, so gradients need no loss scaling: what
/// underflows in f16's 5-bit exponent is representable.
public enum Precision: String, Sendable, CaseIterable {
  case fp32, bf16
}

/// The lowering of a convolution (`--conv`): `auto` takes each pass's cheaper algorithm by `ConvCost`.
public enum ConvAlgorithm: String, Sendable, CaseIterable {
  case auto, im2col, winograd
  /// Winograd F(4x4, 3x3) for every 3x3 stride-1 conv of an inference program that has no pool fused (F(2x2, 3x3)
  /// for the rest, and in training).
  case winogradF4 = "winograd_f4"
}

extension Target {
  /// The C library's `CLOCK_MONOTONIC` on the target's operating system (profiling timestamps call
  /// `clock_gettime` with it): 6 on Apple systems, 1 on Linux.
  public var monotonicClock: Int32 { triple.contains("apple") ? 6 : 1 }
}
