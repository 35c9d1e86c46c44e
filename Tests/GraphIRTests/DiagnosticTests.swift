import CNNCTestSupport
import Foundation
import GraphIR
import Passes
import Testing

/// Every file in Graphs/invalid gives exactly the diagnostics in its sibling `.expected` file.
@Suite struct DiagnosticTests {
  static let invalid: [String] = {
    let dir = Fixtures.graphs.appendingPathComponent("invalid")
    let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
    return files.filter { $0.hasSuffix(".graph") }.sorted()
  }()

  /// Runs the front end the way `cnnc compile` does and renders what it reports.
  static func diagnose(_ name: String) throws -> String {
    let url = Fixtures.graphs.appendingPathComponent("invalid/\(name)")
    let bytes = try [UInt8](Data(contentsOf: url))
    let path = "Graphs/invalid/\(name)"
    do {
      let g = try Parser.parse(bytes, defaultName: "g")
      try Verifier.requireForwardDialect(g)
      _ = try inferShapes(g, batch: 64)
      return ""
    } catch {
      return error.render(file: path, source: bytes)
    }
  }

  @Test func everyErrorClassHasAFile() {
    #expect(Self.invalid.count >= 15)
  }

  @Test(arguments: invalid) func goldenDiagnostics(_ name: String) throws {
    let expectedURL = Fixtures.graphs.appendingPathComponent("invalid/\(name.dropLast(6)).expected")
    let expected = try String(contentsOf: expectedURL, encoding: .utf8)
    let actual = try Self.diagnose(name)
    #expect(!actual.isEmpty, "\(name) must be rejected")
    #expect(actual == expected)
  }

  @Test func specExampleMessage() throws {
    let src = "input pool1: f32[N, 1, 28, 28]\nconv2  = conv2d(pool1, filter: 64, kernel: 3, padding: 1)\noutput conv2\n"
    do {
      _ = try Parser.parse(src, defaultName: "simplecnn")
      Issue.record("expected an error")
    } catch {
      let text = error.render(file: "simplecnn.graph", source: Array(src.utf8))
      #expect(text.hasPrefix("""
        simplecnn.graph:2:24: error: unknown attribute 'filter' for conv2d (did you mean 'filters'?)
        conv2  = conv2d(pool1, filter: 64, kernel: 3, padding: 1)
                               ^~~~~~
        """))
    }
  }

  @Test func keywordsAreNotReserved() throws {
    let g = try Parser.parse("input input: f32[N, 4]\ngraph = relu(input)\noutput = relu(graph)\noutput output\n", defaultName: "k")
    #expect(g.nodes.map(\.name) == ["graph", "output"])
    #expect(g.output == "output")
  }

  @Test func defaultNameIsTheStemAndIntegersAreFloats() throws {
    let g = try Parser.parse("input x: f32[N, 4]\n\t d = dropout(x, rate: 0)   # comment\noutput d", defaultName: "stem")
    #expect(g.name == "stem")
    #expect(g.nodes[0].op == .dropout(DropoutAttrs(rate: 0)))
  }

  /// The backward and fused dialects' operand invariants: a saved argmax that is some other tensor, or a
  /// dropout gradient whose mask has no dropout, is an error at the operand, not a wild memory access later.
  @Test func dialectInvariantsAreVerified() throws {
    let src = """
      input x: f32[N, 2, 4, 4]
      c = conv2d_relu_maxpool(x, filters: 2, kernel: 3, padding: 1, pool_size: 2)
      d = dropout_grad(c, x, rate: 0.5)
      g = relu_maxpool_grad(c, c, x, size: 2, height: 4, width: 4)
      output g
      """
    let g = try Parser.parse(src, defaultName: "ir")
    #expect(throws: DiagnosticList.self) { try Verifier.verify(g) }
    do {
      try Verifier.verify(g)
    } catch {
      let text = error.render(file: "ir.graph", source: Array(src.utf8))
      #expect(text.contains("ir.graph:3:21: error: dropout_grad recomputes the mask of the dropout that produced its second operand; 'x' is not a dropout"), "\(text)")
      #expect(text.contains("ir.graph:4:29: error: relu_maxpool_grad reads the argmax saved by the conv2d_relu_maxpool"), "\(text)")
    }
    // The same ops as differentiation and fusion write them verify.
    let good = try Parser.parse("""
      input x: f32[N, 2, 4, 4]
      c = conv2d_relu_maxpool(x, filters: 2, kernel: 3, padding: 1, pool_size: 2)
      g = relu_maxpool_grad(c, c, c.argmax, size: 2, height: 4, width: 4)
      output g
      """, defaultName: "ir")
    try Verifier.verify(good)
  }
}
