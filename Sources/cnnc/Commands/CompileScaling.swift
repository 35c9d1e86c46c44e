import Foundation
import GraphIR
import LLVMBackend
import Lowering
import Passes
import Runtime

/// `cnnc bench --compile-scaling`: how checking and JIT time grow with the size of a graph, on generated
/// chains (relu statements for the front end, 3x3 convolutions for the JIT), as one JSON object. Time
/// that grows faster than the graph shows up as a rising "per_statement" or "per_layer" figure.
enum CompileScaling {
  /// Front-end sizes: parse, dialect check, shapes, gradients, fusion, lowering and the memory plan.
  static let statementCounts = [1_000, 10_000, 100_000]
  /// JIT sizes: the training step of a chain of convolutions, through IR, optimisation and code generation.
  static let layerCounts = [10, 30, 100, 300]

  /// `input`, a chain of `count` relus over a small image, then a classifier and its loss.
  static func reluChain(_ count: Int) -> String {
    var lines = ["input image: f32[N, 1, 4, 4]", "input label: i32[N]", "r0 = relu(image)"]
    for i in 1..<count { lines.append("r\(i) = relu(r\(i - 1))") }
    lines += ["f = flatten(r\(count - 1))", "fc = dense(f, units: 10)", "loss = cross_entropy(fc, label)", "output fc", "minimize loss"]
    return lines.joined(separator: "\n") + "\n"
  }

  /// A chain of `count` 3x3 convolutions (4 filters, padding 1) over an 8x8 image, then a classifier.
  static func convChain(_ count: Int) -> String {
    var lines = ["input image: f32[N, 1, 8, 8]", "input label: i32[N]", "c0 = conv2d(image, filters: 4, kernel: 3, padding: 1)"]
    for i in 1..<count { lines.append("c\(i) = conv2d(c\(i - 1), filters: 4, kernel: 3, padding: 1)") }
    lines += ["f = flatten(c\(count - 1))", "fc = dense(f, units: 10)", "loss = cross_entropy(fc, label)", "output fc", "minimize loss"]
    return lines.joined(separator: "\n") + "\n"
  }

  static func seconds<E: Error>(_ body: () throws(E) -> Void) throws(E) -> Double {
    let t = Date()
    try body()
    return Date().timeIntervalSince(t)
  }

  static func run(layers: [Int], target: Target) throws -> String {
    var check: [String] = []
    for n in statementCounts {
      let source = Array(reluChain(n).utf8)
      var parse = 0.0, verify = 0.0, pipeline = 0.0
      try reportDiagnostics { () throws(DiagnosticList) in
        var g = Graph(name: "")
        parse = try seconds { () throws(DiagnosticList) in g = try Parser.parse(source, defaultName: "chain") }
        // Checking: what a diagnostic can come from (the dialect, shapes, the gradient's shapes).
        verify = try seconds { () throws(DiagnosticList) in
          try Verifier.requireForwardDialect(g)
          _ = try Pipeline(batch: 64, purpose: .training).run(g, to: .grad)
        }
        pipeline = try seconds { () throws(DiagnosticList) in
          _ = try lower(g, batch: 64, mode: .train(OptimizerSpec(kind: .adam)), target: target)
        }
      }
      check.append(String(format: "{\"statements\": %d, \"parse_s\": %.4f, \"check_s\": %.4f, \"lower_s\": %.4f, \"check_per_statement_us\": %.3f, \"per_statement_us\": %.3f}",
                          n, parse, verify, pipeline, (parse + verify) / Double(n) * 1e6, (parse + verify + pipeline) / Double(n) * 1e6))
    }
    var jit: [String] = []
    for n in layers {
      let g = try reportDiagnostics { () throws(DiagnosticList) in try Parser.parse(convChain(n), defaultName: "convs") }
      var compiler = try JITCompiler(target: target)
      var lowering = 0.0
      var program: Program?
      try reportDiagnostics { () throws(DiagnosticList) in lowering = try seconds { () throws(DiagnosticList) in program = try lower(g, batch: 32, mode: .gradients, target: target) } }
      let total = try seconds { _ = try compiler.compile([program!]) }
      jit.append(String(format: "{\"layers\": %d, \"lower_s\": %.3f, \"ir_s\": %.3f, \"optimize_and_codegen_s\": %.3f, \"link_s\": %.3f, \"per_layer_ms\": %.1f}",
                        n, lowering, compiler.irSeconds, compiler.optimizeSeconds, compiler.codegenSeconds, (lowering + total) / Double(n) * 1000))
    }
    return "{\n  \"compile_scaling\": {\n    \"check\": [\n      " + check.joined(separator: ",\n      ") + "\n    ],\n    \"jit\": [\n      "
      + jit.joined(separator: ",\n      ") + "\n    ]\n  }\n}"
  }

  /// Generated graphs are valid by construction; a diagnostic here is a compiler bug, reported as an error.
  static func reportDiagnostics<T>(_ body: () throws(DiagnosticList) -> T) throws -> T {
    do { return try body() } catch { throw DataError("generated graph rejected: \(error.render(file: "generated", source: []))") }
  }
}
