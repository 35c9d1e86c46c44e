import CNNCTestSupport
import Foundation
import LLVMBackend
import Lowering
import Testing

/// The AOT path: an object file plus C header, linked into a plain C program that trains.
@Suite struct ObjectFileTests {
  static func cc() -> String? {
    for c in ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang", "/opt/swift/usr/bin/clang"] where FileManager.default.isExecutableFile(atPath: c) {
      return c
    }
    return nil
  }

  static func run(_ exe: String, _ args: [String]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let out = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: out, as: UTF8.self))
  }

  @Test func aCProgramTrainsWithTheObjectFile() throws {
    let cc = try #require(Self.cc(), "a C compiler is needed to link the object")
    let dir = NSTemporaryDirectory() + "cnnc-aot-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent("tiny.graph"))
    let programs = [try lower(g, batch: 8, mode: .train(OptimizerSpec(kind: .adam)), target: .host()), try lower(g, batch: 8, mode: .infer, target: .host())]
    let module = LLVMRenderer.render(programs, moduleName: "tiny")
    try module.verify()
    let tm = try TargetMachine(.host(), objectFile: true)
    try module.optimize(tm)
    try module.emitObject(tm, to: dir + "/tiny.o")
    try CHeader.render(programs, source: "Graphs/tiny.graph").write(toFile: dir + "/tiny.h", atomically: true, encoding: .utf8)
    let main = Fixtures.root.appendingPathComponent("Tests/Fixtures/aot_train.c").path
    // A position-independent executable (gcc's default on Debian): the object must link without text relocations.
    let (status, log) = try Self.run(cc, ["-O2", "-fPIE", "-pie", "-I", dir, main, dir + "/tiny.o", "-lopenblas", "-lm", "-o", dir + "/aot_train"])
    #expect(status == 0, "\(log)")
    #expect(!log.contains("warning"), "the link warns: \(log)")
    let (rc, out) = try Self.run(dir + "/aot_train", [])
    #expect(rc == 0)
    let nums = out.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Double($0) }
    try #require(nums.count == 4, "unexpected output: \(out)")
    #expect(nums[0] > 1.5, "starts near ln(10)")
    #expect(nums[1] < nums[0] * 0.3, "the loss falls: \(out)")
    #expect(nums[2] >= 7, "the inference entry point classifies the memorised batch: \(out)")
  }

  /// The README's example (Examples/aot/train.c) trains SimpleCNN from the IDX files with the object alone,
  /// built self-contained: linked without any BLAS library, the object needs only libc and libm.
  @Test func theExampleTrainsSimpleCNNOnMNIST() throws {
    let cc = try #require(Self.cc(), "a C compiler is needed to link the object")
    let dir = NSTemporaryDirectory() + "cnnc-aot-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent("simplecnn.graph"))
    var target = Target.host()
    target.selfContained = true
    let programs = [try lower(g, batch: 64, mode: .train(OptimizerSpec(kind: .adam)), target: target),
                    try lower(g, batch: 64, mode: .infer, target: target)]
    let module = LLVMRenderer.render(programs, moduleName: "simplecnn")
    let tm = try TargetMachine(.host(), objectFile: true)
    try module.optimize(tm)
    try module.emitObject(tm, to: dir + "/simplecnn.o")
    try CHeader.render(programs, source: "Graphs/simplecnn.graph").write(toFile: dir + "/simplecnn.h", atomically: true, encoding: .utf8)
    let main = Fixtures.root.appendingPathComponent("Examples/aot/train.c").path
    let (status, log) = try Self.run(cc, ["-O2", "-Wall", "-I", dir, main, dir + "/simplecnn.o", "-lz", "-lm", "-o", dir + "/train"])
    #expect(status == 0 && !log.contains("warning"), "\(log)")
    if FileManager.default.isExecutableFile(atPath: "/usr/bin/nm") {
      let (_, undefined) = try Self.run("/usr/bin/nm", ["-u", dir + "/simplecnn.o"])
      let symbols = Set(undefined.split(whereSeparator: \.isWhitespace).filter { $0 != "U" }.map(String.init))
      #expect(symbols.isSubset(of: ["memset", "memcpy", "expf", "logf"]), "undefined symbols beyond libc and libm: \(symbols.sorted())")
    }
    let (rc, out) = try Self.run(dir + "/train", [Fixtures.root.appendingPathComponent("data/mnist").path, "60"])
    #expect(rc == 0, "\(out)")
    let accuracy = out.split(separator: "\n").last { $0.hasPrefix("test accuracy ") }.flatMap { Double($0.split(separator: " ")[2].dropLast()) }
    let loss = out.split(separator: "\n").first { $0.hasPrefix("step 60 loss ") }.flatMap { Double($0.split(separator: " ")[3]) }
    #expect(loss.map { $0 < 1.5 } == true, "the loss falls below ln(10): \(out)")
    #expect(accuracy.map { $0 > 70 } == true, "60 Adam steps classify most test digits: \(out)")
  }

  /// The cross tools, where installed (`.ci/run` and `make test` install them on Debian).
  static let crossTools = ["/usr/bin/aarch64-linux-gnu-gcc", "/usr/bin/qemu-aarch64", "/usr/bin/aarch64-linux-gnu-nm"]
    .allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }

  /// Compiles the tiny graph's training step and inference for `target` (self-contained) into DIR/tiny.o and tiny.h.
  static func tinyObject(_ target: Target, in dir: String) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent("tiny.graph"))
    let programs = [try lower(g, batch: 8, mode: .train(OptimizerSpec(kind: .adam)), target: target), try lower(g, batch: 8, mode: .infer, target: target)]
    let module = LLVMRenderer.render(programs, moduleName: "tiny")
    let tm = try TargetMachine(target, objectFile: true)
    try module.optimize(tm)
    try module.emitObject(tm, to: dir + "/tiny.o")
    try CHeader.render(programs, source: "Graphs/tiny.graph").write(toFile: dir + "/tiny.h", atomically: true, encoding: .utf8)
  }

  /// The first loss, the last loss and the correct count aot_train.c prints.
  static func results(_ out: String) throws -> (first: Double, last: Double, correct: Double) {
    let nums = out.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Double($0) }
    try #require(nums.count == 4, "unexpected output: \(out)")
    return (nums[0], nums[1], nums[2])
  }

  /// Deploy anywhere: the tiny graph's training step built for AArch64 (NEON blocking, self-contained),
  /// linked with the cross compiler, trains under emulation to the host build's losses (different vector
  /// widths sum in a different order, so within a stated tolerance), and needs nothing beyond libc and libm.
  @Test(.enabled(if: crossTools)) func anAArch64ObjectTrainsUnderEmulation() throws {
    let dir = NSTemporaryDirectory() + "cnnc-cross-\(UUID().uuidString)"
    var arm = try Target.resolve(cpu: "neoverse-n1", triple: "aarch64-unknown-linux-gnu", features: nil, runsHere: false)
    arm.selfContained = true
    var host = Target.host()
    host.selfContained = true
    try Self.tinyObject(arm, in: dir + "/arm")
    try Self.tinyObject(host, in: dir + "/host")
    let main = Fixtures.root.appendingPathComponent("Tests/Fixtures/aot_train.c").path
    let (built, log) = try Self.run("/usr/bin/aarch64-linux-gnu-gcc", ["-O2", "-static", "-I", dir + "/arm", main, dir + "/arm/tiny.o", "-lm", "-o", dir + "/arm/train"])
    #expect(built == 0, "\(log)")
    let (_, undefined) = try Self.run("/usr/bin/aarch64-linux-gnu-nm", ["-u", dir + "/arm/tiny.o"])
    let symbols = Set(undefined.split(whereSeparator: \.isWhitespace).filter { $0 != "U" }.map(String.init))
    #expect(symbols.isSubset(of: ["memset", "memcpy", "expf", "logf"]), "undefined symbols beyond libc and libm: \(symbols.sorted())")
    let cc = try #require(Self.cc())
    let (hostBuilt, hostLog) = try Self.run(cc, ["-O2", "-I", dir + "/host", main, dir + "/host/tiny.o", "-lm", "-o", dir + "/host/train"])
    #expect(hostBuilt == 0, "\(hostLog)")
    let (rc, out) = try Self.run("/usr/bin/qemu-aarch64", [dir + "/arm/train"])
    #expect(rc == 0, "\(out)")
    let (hostRC, hostOut) = try Self.run(dir + "/host/train", [])
    #expect(hostRC == 0, "\(hostOut)")
    let a = try Self.results(out), b = try Self.results(hostOut)
    // The first loss comes from the same initial weights: rounding only. After 60 Adam steps the orders of
    // summation have drifted further, but the run must land where the host's does.
    #expect(abs(a.first - b.first) <= 1e-5 * b.first, "first loss: aarch64 \(a.first), host \(b.first)")
    #expect(abs(a.last - b.last) <= 1e-2 * max(b.last, 1e-3), "last loss: aarch64 \(a.last), host \(b.last)")
    #expect(a.correct == b.correct, "aarch64: \(out) host: \(hostOut)")
  }
}
