import GraphIR
import CLLVM
import Foundation
import Lowering

/// Initialises the native target once per process (LLVM's own initialisers are idempotent).
func initializeNativeTarget() {
  _ = LLVMInitializeNativeTarget()
  _ = LLVMInitializeNativeAsmPrinter()
  _ = LLVMInitializeNativeAsmParser()
}

/// Initialises every target the linked LLVM has, for code built for another architecture.
func initializeAllTargets() {
  LLVMInitializeAllTargetInfos()
  LLVMInitializeAllTargets()
  LLVMInitializeAllTargetMCs()
  LLVMInitializeAllAsmPrinters()
}

/// The architectures the linked LLVM can generate code for (its target registry, e.g. `aarch64 (AArch64
/// (little endian))`), and the ones cnnc shapes kernels for.
public enum LLVMTargets {
  public static var registered: [String] {
    initializeAllTargets()
    var names: [String] = []
    var t = LLVMGetFirstTarget()
    while let target = t {
      names.append("\(String(cString: LLVMGetTargetName(target))) (\(String(cString: LLVMGetTargetDescription(target))))")
      t = LLVMGetNextTarget(target)
    }
    return names.sorted()
  }

  /// The architectures with kernel shapes (target descriptions) in cnnc.
  public static let supported = ["x86-64 (x86_64-unknown-linux-gnu and other x86_64 triples)", "aarch64 (aarch64-unknown-linux-gnu, arm64-apple-darwin)"]
}

/// A failure to describe or use a target: an unknown CPU, or one this machine cannot run.
public struct TargetError: UserFacingError {
  public var description: String
}

/// The CPU names `--cpu` accepts, by the vector ISA their code uses. A name's code may use every feature
/// of that CPU; the ISA is what the kernels are shaped for.
public enum KnownCPUs {
  /// Features every x86-64 CPU has and compiled float code cannot do without (the ABI's SSE registers).
  static let x86Baseline: Set = ["sse", "sse2", "x87"]
  public static let byISA: [(isa: Target.ISA, names: [String])] = [
    (.sse, ["x86-64", "x86-64-v2", "nehalem", "westmere", "sandybridge", "ivybridge", "btver2", "bdver1", "bdver2", "bdver3"]),
    (.avx2, ["x86-64-v3", "haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "bdver4",
             "znver1", "znver2", "znver3"]),
    (.avx512, ["x86-64-v4", "skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client", "icelake-server",
               "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids", "znver4", "znver5"]),
    (.neon, ["generic", "cortex-a53", "cortex-a55", "cortex-a72", "cortex-a76", "cortex-a78", "neoverse-n1", "neoverse-n2",
             "neoverse-v1", "neoverse-v2", "apple-m1", "apple-m2", "ampere1"]),
  ]

  /// The features a CPU of each x86 ISA class must have for the kernels' vectors (LLVM 19 spells 512-bit
  /// AVX-512 vectors as `evex512` beside `avx512f`).
  static let required: [Target.ISA: [String]] = [
    .avx2: ["avx", "avx2", "fma"],
    .avx512: ["avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "evex512"],
  ]

  /// The x86 CPUs with AVX512_BF16 (the bf16 dot product, `Target.bf16Dot`) among those of the AVX-512 class.
  static let bf16Dot: Set = ["cooperlake", "sapphirerapids", "emeraldrapids", "graniterapids", "znver4", "znver5"]
  /// LLVM's name of that feature.
  static let bf16Feature = "avx512bf16"
  /// The x86 CPUs with AVX512_VNNI (the u8 x s8 dot product, `Target.int8Dot`) among those of the AVX-512 class.
  static let int8Dot: Set = ["cascadelake", "cooperlake", "icelake-client", "icelake-server", "tigerlake", "rocketlake", "sapphirerapids",
                             "emeraldrapids", "graniterapids", "znver4", "znver5"]
  /// LLVM's name of that feature.
  static let int8Feature = "avx512vnni"

  static func isa(of cpu: String, aarch64: Bool) -> Target.ISA? {
    byISA.first { ($0.isa == .neon) == aarch64 && $0.names.contains(cpu) }?.isa
  }

  static func list(aarch64: Bool) -> String {
    byISA.filter { ($0.isa == .neon) == aarch64 }.map { "\($0.isa.rawValue): \($0.names.joined(separator: ", "))" }.joined(separator: "; ")
  }
}

extension Target {
  /// This machine: LLVM's host CPU name and features, caches and physical cores from sysfs.
  public static func host() -> Target {
    initializeNativeTarget()
    let triple = LLVMError.take(LLVMGetDefaultTargetTriple())
    let cpu = LLVMError.take(LLVMGetHostCPUName())
    let features = LLVMError.take(LLVMGetHostCPUFeatures())
    let enabled = Set(features.split(separator: ",").filter { $0.hasPrefix("+") }.map { String($0.dropFirst()) })
    let isa: ISA = triple.hasPrefix("aarch64") || triple.hasPrefix("arm64") ? .neon
      : KnownCPUs.required[.avx512]!.allSatisfy(enabled.contains) ? .avx512
      : KnownCPUs.required[.avx2]!.allSatisfy(enabled.contains) ? .avx2 : .sse
    let nominal = nominalCaches(isa), caches = HostCaches.read()
    var t = Target(triple: triple, cpu: cpu, features: features, isa: isa, l1: caches.l1 ?? nominal.l1, l2: caches.l2 ?? nominal.l2,
                   l3: caches.l3 ?? nominal.l3, cores: caches.cores ?? ProcessInfo.processInfo.activeProcessorCount, origin: .host)
    t.bf16Dot = isa == .avx512 && enabled.contains(KnownCPUs.bf16Feature)
    t.int8Dot = isa == .avx512 && enabled.contains(KnownCPUs.int8Feature)
    return t
  }

  /// The target for `--cpu`, `--target` and `--features`: the host when none is given. With `runsHere`
  /// (the code is executed in this process) a CPU whose vector features this machine lacks, or another
  /// architecture, is refused, and every feature the host lacks is switched off, so the code never
  /// meets an instruction this machine cannot execute.
  public static func resolve(cpu: String?, triple: String?, features: String?, runsHere: Bool) throws -> Target {
    let host = host()
    guard cpu != nil || triple != nil || features != nil else { return host }
    let triple = triple ?? host.triple
    let aarch64 = triple.hasPrefix("aarch64") || triple.hasPrefix("arm64")
    guard aarch64 || triple.hasPrefix("x86_64") else {
      throw TargetError(description: "unsupported target triple '\(triple)': cnnc builds for x86_64 and aarch64 triples")
    }
    let hostArm = host.isa == .neon
    // Code this process runs must be this machine's architecture, and its object format and calling convention
    // (the system and environment parts of the triple: linux-gnu's ELF and System V ABI, not Windows' COFF).
    if runsHere && (aarch64 != hostArm || systemAndEnvironment(triple) != systemAndEnvironment(host.triple)) {
      throw TargetError(description: "code for \(triple) cannot run on this \(host.triple) machine; use it with 'cnnc compile --emit'")
    }
    let name = cpu ?? (aarch64 == hostArm ? host.cpu : aarch64 ? "generic" : "x86-64-v3")
    var isa: ISA
    if name == host.cpu, aarch64 == hostArm {
      isa = host.isa
    } else if let known = KnownCPUs.isa(of: name, aarch64: aarch64) {
      isa = known
    } else {
      throw TargetError(description: "unknown CPU '\(name)' for \(triple); known CPUs by ISA: \(KnownCPUs.list(aarch64: aarch64))")
    }
    var extra = features ?? ""
    let (added, removed) = try parseFeatures(extra, triple: triple, aarch64: aarch64, host: host)
    // Features switched on or off move the ISA class the kernels are shaped for.
    if !aarch64 {
      if isa < .avx512, KnownCPUs.required[.avx512]!.filter({ !["avx2", "fma"].contains($0) }).allSatisfy(added.contains) { isa = .avx512 }
      if isa < .avx2, KnownCPUs.required[.avx2]!.allSatisfy(added.contains) { isa = .avx2 }
      if isa == .avx512, !removed.isDisjoint(with: KnownCPUs.required[.avx512]!) { isa = .avx2 }
      if isa == .avx2, !removed.isDisjoint(with: KnownCPUs.required[.avx2]!) { isa = .sse }
    }
    if runsHere {
      let hostFeatures = host.features.split(separator: ",")
      let hostHas = Set(hostFeatures.filter { $0.hasPrefix("+") }.map { String($0.dropFirst()) })
      let lacking = (KnownCPUs.required[isa] ?? []).filter { !hostHas.contains($0) } + added.filter { !hostHas.contains($0) && !$0.isEmpty }
      if !lacking.isEmpty {
        throw TargetError(description: "this machine (\(host.cpu), \(host.isa.rawValue)) cannot run code for \(name)\(extra.isEmpty ? "" : " with \(extra)"): it lacks \(lacking.sorted().joined(separator: ", ")); pick a lower --cpu (e.g. x86-64-v3 for AVX2)")
      }
      // Whatever else the named CPU has and this machine lacks is switched off.
      let off = hostFeatures.filter { $0.hasPrefix("-") }.joined(separator: ",")
      extra = [off, extra].filter { !$0.isEmpty }.joined(separator: ",")
    }
    let sameMachine = runsHere || (name == host.cpu && triple == host.triple)
    let nominal = nominalCaches(isa)
    var t = Target(triple: triple, cpu: name, features: name == host.cpu && features == nil ? host.features : extra, isa: isa,
                   l1: sameMachine ? host.l1 : nominal.l1, l2: sameMachine ? host.l2 : nominal.l2,
                   l3: sameMachine ? host.l3 : nominal.l3, cores: sameMachine ? host.cores : 2, origin: .override)
    // The CPU's own dot products, or ones `--features` adds; not where the features finally switch them off.
    func has(_ feature: String, cpus: Set<String>, host hostHas: Bool) -> Bool {
      let switchedOff = t.features.split(separator: ",").contains { $0 == "-\(feature)" }
      let named = name == host.cpu && aarch64 == hostArm ? hostHas : cpus.contains(name)
      return isa == .avx512 && !switchedOff && (named || added.contains(feature))
    }
    t.bf16Dot = has(KnownCPUs.bf16Feature, cpus: KnownCPUs.bf16Dot, host: host.bf16Dot)
    t.int8Dot = has(KnownCPUs.int8Feature, cpus: KnownCPUs.int8Dot, host: host.int8Dot)
    return t
  }
}

extension Target {
  /// The features `--features` switches on and off, refused when malformed, unknown to LLVM (for the host's
  /// architecture, whose list names every feature LLVM knows for it; LLVM would only warn and ignore them) or
  /// needed by the x86-64 calling convention, which passes and returns floats in SSE registers.
  static func parseFeatures(_ list: String, triple: String, aarch64: Bool, host: Target) throws -> (added: Set<String>, removed: Set<String>) {
    let added = Set(list.split(separator: ",").filter { $0.hasPrefix("+") }.map { String($0.dropFirst()) })
    let removed = Set(list.split(separator: ",").filter { $0.hasPrefix("-") }.map { String($0.dropFirst()) })
    for bad in list.split(separator: ",") where !(bad.hasPrefix("+") || bad.hasPrefix("-")) || bad.count < 2 {
      throw TargetError(description: "bad feature '\(bad)' in --features: write +name or -name, comma-separated (e.g. +avx2,-avx512f)")
    }
    if aarch64 == (host.isa == .neon) {
      let known = Set(host.features.split(separator: ",").map { String($0.dropFirst()) })
      if let unknown = added.union(removed).sorted().first(where: { !known.contains($0) }) {
        throw TargetError(description: "unknown feature '\(unknown)' in --features for \(triple) (features are LLVM's names, e.g. avx2, fma, avx512f)")
      }
    }
    if !aarch64, let needed = removed.sorted().first(where: KnownCPUs.x86Baseline.contains) {
      throw TargetError(description: "--features -\(needed): every x86-64 CPU has \(needed), and the x86-64 calling convention needs it for float arguments and results; remove it from --features")
    }
    return (added, removed)
  }
}

/// The system and environment parts of a triple, normalised ("linux-gnu" of "x86_64-unknown-linux-gnu"; the
/// vendor is left out, since it changes neither the object format nor the ABI).
func systemAndEnvironment(_ triple: String) -> String {
  let normalized = LLVMError.take(LLVMNormalizeTargetTriple(triple))
  return normalized.split(separator: "-", omittingEmptySubsequences: false).dropFirst(2).joined(separator: "-")
}

/// The host's data caches per core and its physical cores, from sysfs (nil where it is not there).
enum HostCaches {
  static func read() -> (l1: Int?, l2: Int?, l3: Int?, cores: Int?) {
    let root = "/sys/devices/system/cpu"
    func text(_ path: String) -> String? {
      (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    /// "0-3,8" -> 5.
    func count(_ list: String) -> Int {
      list.split(separator: ",").reduce(0) { n, part in
        let ends = part.split(separator: "-").compactMap { Int($0) }
        return n + (ends.count == 2 ? ends[1] - ends[0] + 1 : 1)
      }
    }
    /// "32K" / "8192K" / "1M" -> bytes.
    func bytes(_ s: String) -> Int? {
      let unit: Int = s.hasSuffix("K") ? 1 << 10 : s.hasSuffix("M") ? 1 << 20 : 1
      return Int(s.trimmingCharacters(in: CharacterSet(charactersIn: "KM"))).map { $0 * unit }
    }
    var caches: [Int: Int] = [:]
    for index in 0..<8 {
      let dir = "\(root)/cpu0/cache/index\(index)"
      guard let level = text("\(dir)/level").flatMap(Int.init), let type = text("\(dir)/type"), type != "Instruction",
            let size = text("\(dir)/size").flatMap(bytes) else { continue }
      let sharing = text("\(dir)/shared_cpu_list").map(count) ?? 1
      caches[level] = size / max(1, sharing)
    }
    var cores = Set<String>()
    for cpu in 0..<4096 {
      guard let core = text("\(root)/cpu\(cpu)/topology/core_id") else { break }
      cores.insert("\(text("\(root)/cpu\(cpu)/topology/physical_package_id") ?? "0").\(core)")
    }
    return (caches[1], caches[2], caches[3], cores.isEmpty ? nil : cores.count)
  }
}

/// An owned TargetMachine for a `Target`: its triple, CPU name and features.
public final class TargetMachine {
  let ref: LLVMTargetMachineRef
  public let target: Target
  public var triple: String { target.triple }
  public var cpu: String { target.cpu }

  /// `positionIndependent` for objects the JIT links (placed anywhere in memory) and for shared objects.
  /// `objectFile` for an object a system linker links into a program: position-independent code in the
  /// small code model, so it links into a position-independent executable (gcc's default) without text
  /// relocations; the JIT keeps its own code model.
  public init(_ target: Target, positionIndependent: Bool = false, objectFile: Bool = false) throws {
    self.target = target
    ref = try Self.create(target, relocation: positionIndependent || objectFile ? LLVMRelocPIC : LLVMRelocDefault,
                          codeModel: objectFile ? LLVMCodeModelDefault : LLVMCodeModelJITDefault)
  }

  /// A new LLVM target machine the caller owns (the JIT's builder takes one over).
  static func create(_ t: Target, relocation: LLVMRelocMode = LLVMRelocDefault,
                     codeModel: LLVMCodeModel = LLVMCodeModelJITDefault) throws -> LLVMTargetMachineRef {
    initializeNativeTarget()
    func arch(_ triple: String) -> Substring { triple.prefix { $0 != "-" } }
    if arch(t.triple) != arch(LLVMError.take(LLVMGetDefaultTargetTriple())) { initializeAllTargets() }
    var target: LLVMTargetRef?
    var err: UnsafeMutablePointer<CChar>?
    guard LLVMGetTargetFromTriple(t.triple, &target, &err) == 0, let target else {
      throw LLVMError.target(LLVMError.take(err))
    }
    guard let tm = LLVMCreateTargetMachine(target, t.triple, t.cpu, t.features, LLVMCodeGenLevelAggressive,
                                           relocation, codeModel) else {
      throw LLVMError.target("cannot create a target machine for \(t.triple) (\(t.cpu))")
    }
    return tm
  }

  /// The data layout string modules must carry for this target.
  public var dataLayout: String {
    let td = LLVMCreateTargetDataLayout(ref)
    defer { LLVMDisposeTargetData(td) }
    return LLVMError.take(LLVMCopyStringRepOfTargetData(td))
  }

  deinit { LLVMDisposeTargetMachine(ref) }
}
