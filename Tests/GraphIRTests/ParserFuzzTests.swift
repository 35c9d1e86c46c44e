import CNNCTestSupport
import Foundation
import GraphIR
import Passes
import Testing

/// Seeded mutations of the example graphs: the front end must answer with diagnostics or success,
/// never a crash, a trap or a hang (the spec's robustness rule).
@Suite struct ParserFuzzTests {
  /// A small deterministic generator (splitmix64) so failures reproduce.
  struct Rng {
    var state: UInt64
    mutating func next() -> UInt64 {
      state &+= 0x9e37_79b9_7f4a_7c15
      var z = state
      z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
      z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
      return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }
  }

  static let pieces: [[UInt8]] = [
    "99999999999999999999", "9223372036854775807", "4294967296", "0", "-1", "N", "1.0e308", "1.0e999", ".", ":", ",",
    "(", ")", "[", "]", "=", "#", "\n", "\t", "conv2d(", "dense(x, units: 1099511627776)", "kernel: 0",
    "\u{FF}", "\u{00e9}", "f32[N, 1000000000, 1000000000]", "output", "minimize", "graph g", "input", "x.weight",
  ].map { Array($0.utf8) } + [[0xFF], [0xC3], [0xE2, 0x82], [0x00]]

  static func mutate(_ src: [UInt8], _ r: inout Rng) -> [UInt8] {
    var s = src
    for _ in 0..<(1 + r.below(4)) {
      switch r.below(7) {
      case 0: s = Array(s.prefix(r.below(s.count + 1)))  // truncate
      case 1:  // splice a random byte range of the source elsewhere
        guard !s.isEmpty else { break }
        let a = r.below(s.count), b = min(s.count, a + r.below(40))
        s.insert(contentsOf: s[a..<b], at: r.below(s.count + 1))
      case 2: s.insert(contentsOf: pieces[r.below(pieces.count)], at: r.below(s.count + 1))
      case 3: if !s.isEmpty { s[r.below(s.count)] = UInt8(truncatingIfNeeded: r.next()) }
      case 4: if !s.isEmpty { s.remove(at: r.below(s.count)) }
      case 5: s += Array(repeating: UInt8(ascii: "a"), count: r.below(5000))  // a long line
      default:  // a deep chain
        var chain = "input x: f32[N, 8]\n"
        for i in 0..<r.below(3000) { chain += "v\(i) = relu(\(i == 0 ? "x" : "v\(i - 1)"))\n" }
        s += Array(chain.utf8)
      }
    }
    return s
  }

  @Test func mutatedGraphsNeverCrash() throws {
    let sources = try Fixtures.exampleGraphs().map { try [UInt8](Data(contentsOf: $0)) }
    var r = Rng(state: 20261123)
    let start = Date()
    var accepted = 0, rejected = 0
    // Bounded by iterations and by time, so the test stays a few seconds on any machine.
    for _ in 0..<4000 where Date().timeIntervalSince(start) < 8 {
      let src = Self.mutate(sources[r.below(sources.count)], &r)
      do {
        let g = try Parser.parse(src, defaultName: "fuzz")
        let shapes = try inferShapes(g, batch: 1 + r.below(128))
        _ = summarize(g, shapes)
        if g.minimize != nil { _ = try inferShapes(try differentiate(g), batch: 2) }
        _ = Printer.print(g)
        accepted += 1
      } catch {
        #expect(!error.diagnostics.isEmpty)
        _ = error.render(file: "fuzz.graph", source: src)
        rejected += 1
      }
    }
    #expect(accepted > 0 && rejected > 0)
  }
}
