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
}
