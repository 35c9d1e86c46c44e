import CNNCTestSupport
import Foundation
import FuzzTargets
import GraphIR
import Passes
import Runtime
import Testing

/// Every fuzz target on the inputs the coverage-guided fuzzer once crashed on (`Fuzz/regressions/TARGET`),
/// and on seeded mutations of valid files: each input is accepted or refused, and the process survives.
@Suite struct FuzzTargetsTests {
  static func regressions(_ t: FuzzTarget) -> [URL] {
    let dir = Fixtures.root.appendingPathComponent("Fuzz/regressions/\(t.rawValue)")
    return ((try? FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)) ?? [])
      .filter { !$0.lastPathComponent.hasPrefix(".") }.sorted { $0.path < $1.path }
  }

  @Test(arguments: FuzzTarget.allCases) func regressionsAreReplayed(_ t: FuzzTarget) throws {
    let files = Self.regressions(t)
    #expect(!files.isEmpty, "Fuzz/regressions/\(t.rawValue) holds at least one input")
    for f in files { t.run([UInt8](try Data(contentsOf: f))) }
  }

  /// Byte-level mutations: truncation, flipped and random bytes, spliced ranges, 32- and 64-bit extremes
  /// written over length and offset fields.
  static func mutate(_ src: [UInt8], _ r: inout SeededRandom) -> [UInt8] {
    var s = src
    func below(_ n: Int) -> Int { Int(r.next() % UInt64(max(1, n))) }
    for _ in 0..<(1 + below(3)) {
      switch below(6) {
      case 0: s = Array(s.prefix(below(s.count + 1)))
      case 1: if !s.isEmpty { s[below(s.count)] ^= UInt8(1 << below(8)) }
      case 2: if !s.isEmpty { s[below(s.count)] = UInt8(truncatingIfNeeded: r.next()) }
      case 3:
        guard !s.isEmpty else { break }
        let a = below(s.count), b = min(s.count, a + below(64))
        s.insert(contentsOf: s[a..<b], at: below(s.count + 1))
      case 4:
        let extremes: [[UInt8]] = [[0xFF, 0xFF, 0xFF, 0xFF], [0x7F, 0xFF, 0xFF, 0xFF], [0, 0, 0, 0], [0x80, 0, 0, 0],
                                   Array("9223372036854775807".utf8), Array("-1".utf8), Array("1e308".utf8)]
        let e = extremes[below(extremes.count)]
        guard s.count >= e.count else { break }
        let at = below(s.count - e.count + 1)
        s.replaceSubrange(at..<(at + e.count), with: e)
      default: s += (0..<below(100)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
      }
    }
    return s
  }

  /// Runs `count` mutations of the seeds; the unmutated seeds must be accepted and some mutations refused,
  /// so the check can fail in both directions.
  static func fuzz(_ t: FuzzTarget, seeds: [[UInt8]], count: Int) {
    for s in seeds { #expect(t.run(s), "\(t.rawValue) seed is accepted") }
    var r = SeededRandom(seed: 20261201, stream: UInt64(t.rawValue.utf8.count))
    var refused = 0
    for i in 0..<count where !t.run(mutate(seeds[i % seeds.count], &r)) { refused += 1 }
    #expect(refused > 0, "some mutated \(t.rawValue) inputs are refused")
  }

  @Test func mutatedSafetensorsNeverCrash() throws {
    let weights = FuzzTarget.weightsGraph
    let p = Parameters(graph: weights, shapes: try inferShapes(weights, batch: 1), seed: 4)
    let st = p.safeTensors(metadata: ["format": "pt", "cnnc.step": "3"])
    Self.fuzz(.safetensors, seeds: [st.serialized()], count: 1500)
  }

  @Test func mutatedIDXFilesNeverCrash() throws {
    func idx(_ magic: UInt32, _ dims: [UInt32]) -> [UInt8] {
      var b: [UInt8] = []
      for v in [magic] + dims { b += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
      return b + (0..<Int(dims.reduce(1, *))).map { UInt8(truncatingIfNeeded: $0 &* 37) }
    }
    let images = idx(0x803, [3, 28, 28]), labels = idx(0x801, [5])
    let gz = try gzip(images)
    Self.fuzz(.idx, seeds: [images, labels, gz], count: 600)
  }

  @Test func mutatedONNXModelsNeverCrash() throws {
    let dir = Fixtures.root.appendingPathComponent("Tests/Fixtures/onnx")
    let seeds = try ["tiny.onnx", "bnnet.onnx"].map { [UInt8](try Data(contentsOf: dir.appendingPathComponent($0))) }
    Self.fuzz(.onnx, seeds: seeds, count: 600)
  }

  @Test func mutatedNPYArraysNeverCrash() throws {
    let small = try [UInt8](Data(contentsOf: Fixtures.root.appendingPathComponent("Tests/Fixtures/npy/small.npy")))
    Self.fuzz(.npy, seeds: [small], count: 1500)
  }

  @Test func mutatedJPEGsNeverCrash() throws {
    let dir = Fixtures.root.appendingPathComponent("Tests/Fixtures/images")
    let seeds = try ["colour.jpg", "progressive.jpg", "grey.jpg", "orientation6.jpg"].map { [UInt8](try Data(contentsOf: dir.appendingPathComponent($0))) }
    Self.fuzz(.jpeg, seeds: seeds, count: 1500)
  }

  @Test func mutatedPNGsNeverCrash() throws {
    let seven = try [UInt8](Data(contentsOf: Fixtures.root.appendingPathComponent("Tests/Fixtures/seven.png")))
    Self.fuzz(.png, seeds: [seven], count: 1500)
  }

  /// Mutated example graphs through the whole pipeline, lowering and memory planning included.
  @Test func mutatedGraphsThroughTheWholePipeline() throws {
    let seeds = try Fixtures.exampleGraphs().map { try [UInt8](Data(contentsOf: $0)) }
    Self.fuzz(.graph, seeds: seeds, count: 400)
  }

  /// gzip from Debian's gzip, so the test builds its compressed seed the way users' files are made.
  func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/gzip")
    p.arguments = ["-c"]
    let input = Pipe(), output = Pipe()
    p.standardInput = input
    p.standardOutput = output
    try p.run()
    input.fileHandleForWriting.write(Data(bytes))
    try input.fileHandleForWriting.close()
    let out = output.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return [UInt8](out)
  }
}
