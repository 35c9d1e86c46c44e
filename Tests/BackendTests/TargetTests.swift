import CNNCTestSupport
import Foundation
import LLVMBackend
import Lowering
import Testing

/// The targets the differential tests run on: this machine, and a lower x86 target it can execute
/// (x86-64-v3 on an AVX-512 host, x86-64-v2 on an AVX2 host), so the narrower kernels are run too.
enum TestTargets {
  static let names = ["host", "lower"]

  static func resolve(_ name: String) throws -> Target {
    let host = Target.host()
    guard name == "lower" else { return host }
    switch host.isa {
    case .avx512: return try Target.resolve(cpu: "x86-64-v3", triple: nil, features: nil, runsHere: true)
    case .avx2: return try Target.resolve(cpu: "x86-64-v2", triple: nil, features: nil, runsHere: true)
    case .sse, .neon: return host
    }
  }
}

/// One target description drives the kernels: register blocking fits each register file, the renderers
/// print vectors of the target's width, the micro-kernels' inner loops never touch the stack (checked in
/// assembly emitted for the target, nothing executed), and overrides this machine cannot run are refused.
@Suite struct TargetTests {
  static let fixed: [(cpu: String, isa: Target.ISA)] = [("x86-64-v3", .avx2), ("znver3", .avx2), ("x86-64-v4", .avx512),
                                                        ("znver4", .avx512), ("neoverse-n1", .neon)]

  static func target(_ cpu: String) throws -> Target {
    let isa = fixed.first { $0.cpu == cpu }!.isa
    return try Target.resolve(cpu: cpu, triple: isa == .neon ? "aarch64-unknown-linux-gnu" : "x86_64-unknown-linux-gnu",
                              features: nil, runsHere: false)
  }

  @Test func blockingFitsEveryRegisterFileWithEnoughAccumulators() {
    for isa in Target.ISA.allCases {
      let t = Target.named("cpu", isa: isa)
      for (m, n, k) in [(64, 3136, 288), (288, 64, 3136), (9, 32, 12544), (128, 64, 3136), (7, 5, 100), (1000, 1000, 1000), (3, 200, 9)] {
        let b = GemmBlocking.choose(m: m, n: n, k: k, target: t)
        #expect(b.rows * b.vectors + b.vectors + 1 <= t.vectorRegisters, "\(isa) \(m)x\(n)x\(k): \(b) needs more than \(t.vectorRegisters) registers")
        if m >= 8 && n >= 4 * t.lanes {
          #expect(b.rows * b.vectors >= t.minimumAccumulators, "\(isa) \(m)x\(n)x\(k): \(b) has too few accumulators")
        }
        #expect(b.kPanel >= 1 && b.kPanel <= k)
      }
    }
    // The blocks the register files call for: 12 accumulators on AVX2, 24 on AVX-512 and NEON (conv2's forward).
    #expect(GemmBlocking.choose(m: 64, n: 3136, k: 288, target: .named("x86-64-v3", isa: .avx2)).rows
              * GemmBlocking.choose(m: 64, n: 3136, k: 288, target: .named("x86-64-v3", isa: .avx2)).vectors == 12)
    let v4 = GemmBlocking.choose(m: 64, n: 3136, k: 288, target: .named("x86-64-v4", isa: .avx512))
    #expect(v4.rows * v4.vectors == 24)
  }

  @Test(arguments: ["x86-64-v3", "x86-64-v4", "neoverse-n1"]) func renderedVectorsHaveTheTargetsWidth(_ cpu: String) throws {
    let t = try Self.target(cpu)
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent("simplecnn.graph"))
    let p = try lower(g, batch: 8, mode: .train(OptimizerSpec(kind: .adam)), target: t)
    let ir = LLVMRenderer.render([p], moduleName: "width").text
    #expect(ir.contains("<\(t.lanes) x float>"))
    for other in [4, 8, 16] where other != t.lanes { #expect(!ir.contains("<\(other) x float>"), "\(cpu): \(other)-lane vectors in the IR") }
    #expect(ir.contains("\"target-cpu\"=\"\(cpu)\""))
  }

  /// The single-block loops of the assembly that contain vector FMAs (the micro-kernels' k loops; or the
  /// instructions starting with `multiply`), and how many of their instructions address the stack.
  static func fmaLoops(_ asm: String, arm: Bool, multiply: String? = nil) -> [(label: String, fmas: Int, stack: Int)] {
    let lines = asm.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    var loops: [(String, Int, Int)] = []
    var label: String?, fmas = 0, stack = 0
    for line in lines {
      if line.hasSuffix(":"), !line.hasPrefix("#"), !line.hasPrefix("//") {
        label = String(line.dropLast())
        (fmas, stack) = (0, 0)
        continue
      }
      guard let l = label else { continue }
      let code = line.split(separator: arm ? "//" : "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
      if code.hasPrefix(multiply ?? (arm ? "fmla" : "vfmadd")) { fmas += 1 }
      // A spill or reload addresses the stack pointer (rbp and x29 are ordinary registers in these loops).
      if arm ? code.contains("[sp") : code.contains("(%rsp)") { stack += 1 }
      let branch = arm ? code.hasPrefix("b.") || code.hasPrefix("cbnz") || code.hasPrefix("b ") : code.hasPrefix("j")
      if branch, code.hasSuffix(l) {
        if fmas > 0 { loops.append((l, fmas, stack)) }
        label = nil
      }
    }
    return loops
  }

  @Test(arguments: ["x86-64-v3", "znver3", "x86-64-v4", "znver4", "neoverse-n1"]) func microKernelLoopsDoNotSpill(_ cpu: String) throws {
    let t = try Self.target(cpu)
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent("simplecnn.graph"))
    let programs = [try lower(g, batch: 32, mode: .gradients, target: t), try lower(g, batch: 64, mode: .infer, target: t)]
    let module = LLVMRenderer.render(programs, moduleName: "spills")
    try module.verify()
    let tm = try TargetMachine(t)
    try module.optimize(tm)
    let loops = Self.fmaLoops(try module.assembly(tm), arm: t.isa == .neon)
    let gemms = programs.reduce(0) { $0 + $1.gemms.count }
    // Every register-blocked GEMM has at least one micro-kernel k loop (full blocks; remainders add more).
    #expect(loops.count >= gemms, "\(cpu): \(loops.count) FMA loops for \(gemms) GEMMs")
    let spilling = loops.filter { $0.stack > 0 }
    #expect(spilling.isEmpty, "\(cpu): micro-kernel loops touching the stack: \(spilling.map { "\($0.label) (\($0.fmas) FMAs, \($0.stack) stack accesses)" })")
  }

  @Test func overridesThisMachineCannotRunAreRefused() throws {
    let host = Target.host()
    #expect(throws: TargetError.self) { _ = try Target.resolve(cpu: "pentium-nonesuch", triple: nil, features: nil, runsHere: false) }
    #expect(throws: TargetError.self) { _ = try Target.resolve(cpu: nil, triple: "riscv64-unknown-linux-gnu", features: nil, runsHere: false) }
    #expect(throws: TargetError.self) { _ = try Target.resolve(cpu: nil, triple: nil, features: "avx2", runsHere: false) }
    if host.isa != .neon {
      #expect(throws: TargetError.self) { _ = try Target.resolve(cpu: "neoverse-n1", triple: "aarch64-unknown-linux-gnu", features: nil, runsHere: true) }
    }
    if host.isa < .avx512 {
      do {
        _ = try Target.resolve(cpu: "x86-64-v4", triple: nil, features: nil, runsHere: true)
        Issue.record("an AVX-512 CPU was accepted for running on a \(host.isa) machine")
      } catch let e as TargetError {
        #expect(e.description.contains("avx512f"))
      }
    }
    // A lower CPU than the host is accepted, and whatever the host lacks is switched off.
    let lower = try Target.resolve(cpu: "x86-64-v2", triple: nil, features: nil, runsHere: true)
    #expect(lower.isa == .sse && lower.lanes == 4)
    // Feature switches move the ISA class the kernels are shaped for.
    #expect(try Target.resolve(cpu: "x86-64-v4", triple: nil, features: "-avx512f", runsHere: false).isa == .avx2)
  }

  /// Code for another system's object format and calling convention is written, never run here; the features
  /// the x86-64 ABI needs cannot be switched off.
  @Test func otherSystemsAndTheABIsFeaturesAreRefusedForRunning() throws {
    let host = Target.host()
    let arch = host.isa == .neon ? "aarch64" : "x86_64"
    for system in ["pc-windows-msvc", "w64-windows-gnu", "apple-macosx14", "unknown-freebsd"] {
      #expect(throws: TargetError.self, "\(system)") { _ = try Target.resolve(cpu: nil, triple: "\(arch)-\(system)", features: nil, runsHere: true) }
      #expect(try Target.resolve(cpu: nil, triple: "\(arch)-\(system)", features: nil, runsHere: false).triple == "\(arch)-\(system)")
    }
    // The vendor part does not matter.
    if host.triple.hasSuffix("linux-gnu") { _ = try Target.resolve(cpu: nil, triple: "\(arch)-unknown-linux-gnu", features: nil, runsHere: true) }
    if host.isa != .neon {
      for f in ["-sse", "-sse2", "+avx2,-x87"] {
        #expect(throws: TargetError.self, "\(f)") { _ = try Target.resolve(cpu: "x86-64-v3", triple: nil, features: f, runsHere: false) }
      }
    }
  }
}

/// The kernel benchmark's programs compute what they time: its GEMM (odd shapes, so every remainder
/// block and masked tail runs; padded rows, as im2col's are) against a plain triple loop, on this
/// machine's target and the lower one.
@Suite struct KernelBenchmarkTests {
  @Test(arguments: TestTargets.names) func benchmarkGemmComputesTheProduct(_ name: String) throws {
    let target = try TestTargets.resolve(name)
    let (m, n, k) = (37, 203, 151), (aRow, ldb, ldc) = (k + 3, n + 5, n + 16)
    let p = KernelBenchmark.gemm(GemmChoice(node: "g", m: m, n: n, k: k, aRow: aRow, aCol: 1, ldb: ldb, ldc: ldc, rows: 0, vectors: 0, kPanel: 0),
                                 target: target)
    #expect(p.gemms.count == 1, "the GEMM is register-blocked, not a library call")
    var compiler = try JITCompiler(target: target)
    let entry = try compiler.compile([p])[0]
    var arena = (0..<p.arenaFloats).map { Float(($0 * 7919) % 13) * 0.25 - 1.5 }
    func line(_ x: Int) -> Int { (x + 15) / 16 * 16 }
    let bStart: Int = line((m - 1) * aRow + k)
    let c: Int = line(bStart + (k - 1) * ldb + n)
    let (a, b) = (arena, Array(arena[bStart...]))
    arena.withUnsafeMutableBufferPointer { entry(nil, nil, nil, nil, $0.baseAddress!, nil, nil, nil, 0, 0, 0, nil) }
    #expect(p.arenaFloats == c + (m - 1) * ldc + n)
    for i in 0..<m {
      var expected = [Float](repeating: 0, count: n)
      for j in 0..<n { for q in 0..<k { expected[j] += a[i * aRow + q] * b[q * ldb + j] } }
      expectClose(expected, Array(arena[(c + i * ldc)..<(c + i * ldc + n)]), rtol: 1e-5, "row \(i) of the \(m)x\(n)x\(k) GEMM on \(target.cpu)")
    }
  }

  /// The bf16 dot product comes with the CPU (or `--features`), never with an AVX2-class target, and the
  /// description says which way a bf16 program's GEMMs run.
  @Test func bf16DotProductFollowsTheCPUAndFeatures() throws {
    func resolve(_ cpu: String, _ features: String? = nil) throws -> Target {
      try Target.resolve(cpu: cpu, triple: "x86_64-unknown-linux-gnu", features: features, runsHere: false)
    }
    #expect(try resolve("znver4").bf16Dot && resolve("sapphirerapids").bf16Dot)
    #expect(try !resolve("x86-64-v4").bf16Dot && !resolve("znver3").bf16Dot && !resolve("x86-64-v3").bf16Dot)
    #expect(try !resolve("znver4", "-avx512bf16").bf16Dot, "switched off")
    #expect(try resolve("x86-64-v4", "+avx512bf16").bf16Dot, "switched on")
    var t = try resolve("znver4")
    #expect(!t.description.contains("bf16"))
    t.precision = .bf16
    #expect(t.description.contains("by the bf16 dot product"))
    t.bf16Dot = false
    #expect(t.description.contains("by f32 FMAs"))
  }

  @Test func fmaPeakProgramStaysInRegisters() throws {
    for cpu in ["x86-64-v3", "x86-64-v4"] {
      let t = try Target.resolve(cpu: cpu, triple: "x86_64-unknown-linux-gnu", features: nil, runsHere: false)
      let module = LLVMRenderer.render([KernelBenchmark.fmaPeak(target: t, steps: 1000)], moduleName: "peak")
      let tm = try TargetMachine(t)
      try module.optimize(tm)
      let loops = TargetTests.fmaLoops(try module.assembly(tm), arm: false)
      #expect(loops.contains { $0.fmas == KernelBenchmark.peakChains(t) && $0.stack == 0 }, "\(cpu): \(loops)")
    }
  }
}
