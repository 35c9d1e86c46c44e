import CNNCTestSupport
import Foundation
import LLVMBackend
import Lowering
import Runtime
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
    try Self.object("tiny", batch: 8, .host(), in: dir)
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
    try Self.object("simplecnn", batch: 64, try Self.crossTargets().host, in: dir)
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

  /// Compiles Graphs/NAME.graph's training step and inference at `batch` for `target` into DIR/NAME.o and NAME.h.
  static func object(_ name: String, batch: Int, _ target: Target, in dir: String) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent("\(name).graph"))
    let programs = [try lower(g, batch: batch, mode: .train(OptimizerSpec(kind: .adam)), target: target), try lower(g, batch: batch, mode: .infer, target: target)]
    let module = LLVMRenderer.render(programs, moduleName: name)
    try module.verify()
    let tm = try TargetMachine(target, objectFile: true)
    try module.optimize(tm)
    try module.emitObject(tm, to: "\(dir)/\(name).o")
    try CHeader.render(programs, source: "Graphs/\(name).graph", normalization: (Normalization.mnist.mean[0], Normalization.mnist.std[0])).write(toFile: "\(dir)/\(name).h", atomically: true, encoding: .utf8)
  }

  /// The self-contained AArch64 target of the cross tests, and the host's.
  static func crossTargets() throws -> (arm: Target, host: Target) {
    var arm = try Target.resolve(cpu: "neoverse-n1", triple: "aarch64-unknown-linux-gnu", features: nil, runsHere: false)
    var host = Target.host()
    (arm.selfContained, host.selfContained) = (true, true)
    return (arm, host)
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
    let (arm, host) = try Self.crossTargets()
    try Self.object("tiny", batch: 8, arm, in: dir + "/arm")
    try Self.object("tiny", batch: 8, host, in: dir + "/host")
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

  /// Writes the first `count` images and labels of `data` as uncompressed IDX files of `split`.
  static func writeRawIDX(_ data: ImageDataset, count: Int, split: String, to dir: String) throws {
    func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
    let px = data.rows * data.cols
    let images = [0, 0, 8, 3] + be32(count) + be32(data.rows) + be32(data.cols) + Array(data.images.prefix(count * px))
    let labels = [0, 0, 8, 1] + be32(count) + Array(data.labels.prefix(count))
    try Data(images).write(to: URL(fileURLWithPath: "\(dir)/\(split)-images-idx\(3)-ubyte"))
    try Data(labels).write(to: URL(fileURLWithPath: "\(dir)/\(split)-labels-idx1-ubyte"))
  }

  /// SimpleCNN built for AArch64 trains from a slice of MNIST under emulation (Examples/aot/train.c without
  /// zlib) to the host build's loss and test predictions.
  @Test(.enabled(if: crossTools)) func simpleCNNTrainsOnAnMNISTSliceUnderEmulation() throws {
    let dir = NSTemporaryDirectory() + "cnnc-cross-\(UUID().uuidString)"
    let (arm, host) = try Self.crossTargets()
    try Self.object("simplecnn", batch: 64, arm, in: dir + "/arm")
    try Self.object("simplecnn", batch: 64, host, in: dir + "/host")
    let mnist = Fixtures.root.appendingPathComponent("data/mnist").path
    try Self.writeRawIDX(try ImageDataset.load(directory: mnist, split: "train"), count: 192, split: "train", to: dir)
    try Self.writeRawIDX(try ImageDataset.load(directory: mnist, split: "t10k"), count: 64, split: "t10k", to: dir)
    let main = Fixtures.root.appendingPathComponent("Examples/aot/train.c").path
    let (built, log) = try Self.run("/usr/bin/aarch64-linux-gnu-gcc", ["-O2", "-static", "-DCNNC_NO_ZLIB", "-I", dir + "/arm", main, dir + "/arm/simplecnn.o", "-lm", "-o", dir + "/arm/train"])
    #expect(built == 0, "\(log)")
    let (hostBuilt, hostLog) = try Self.run(try #require(Self.cc()), ["-O2", "-DCNNC_NO_ZLIB", "-I", dir + "/host", main, dir + "/host/simplecnn.o", "-lm", "-o", dir + "/host/train"])
    #expect(hostBuilt == 0, "\(hostLog)")
    // Three steps and 64 test images: about 20 s under emulation.
    let (rc, out) = try Self.run("/usr/bin/qemu-aarch64", [dir + "/arm/train", dir, "3", "64"])
    let (hostRC, hostOut) = try Self.run(dir + "/host/train", [dir, "3", "64"])
    #expect(rc == 0 && hostRC == 0, "aarch64: \(out) host: \(hostOut)")
    func figures(_ s: String) -> (loss: Double?, correct: Int?, logits: [Float]) {
      let lines = s.split(separator: "\n")
      let loss = lines.first { $0.hasPrefix("step 3 loss ") }.flatMap { Double($0.split(separator: " ")[3]) }
      let correct = lines.first { $0.hasPrefix("test accuracy") }.flatMap { Int($0.split(separator: "(")[1].split(separator: " ")[0]) }
      let logits = lines.first { $0.hasPrefix("logits of test image 0:") }.map { $0.split(separator: " ").dropFirst(5).compactMap { Float($0) } } ?? []
      return (loss, correct, logits)
    }
    let (a, b) = (figures(out), figures(hostOut))
    let (la, lb) = (try #require(a.loss, "\(out)"), try #require(b.loss, "\(hostOut)"))
    #expect(abs(la - lb) <= 1e-4 * lb, "loss after 3 steps: aarch64 \(la), host \(lb)")
    #expect(a.logits.count == 10 && b.logits.count == 10, "aarch64: \(out) host: \(hostOut)")
    expectClose(a.logits, b.logits, rtol: 1e-3, atol: 1e-4, "logits of test image 0, aarch64 against host")
    // A prediction may flip on a near-tie between the two summation orders.
    #expect(abs((a.correct ?? -9) - (b.correct ?? 9)) <= 1, "aarch64: \(out) host: \(hostOut)")
  }
}
