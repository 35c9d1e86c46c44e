import ArgumentParser
import Foundation
import GraphIR
import LLVMBackend
import Lowering
import SwiftBackend
import Passes

/// `cnnc compile`: checks a graph, infers shapes, prints the plan and emits code.
struct Compile: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Check a .graph file, print the plan (parameters, FLOPs, memory) and emit code.",
    discussion: """
      --emit swift writes the Swift back end's source (the default, into Generated/); --emit llvm writes
      the LLVM IR before optimisation; --emit obj writes a native object and a C header exporting the
      training step and inference; --emit none only checks and prints the plan.
      """)

  enum Emit: String, ExpressibleByArgument, CaseIterable { case swift, llvm, obj, none }

  @Argument(help: "The .graph file to compile.")
  var file: String

  @Option(help: "Batch size bound to N.")
  var batch: Int = 64

  @Option(help: "What to emit: \(Emit.allCases.map(\.rawValue).joined(separator: ", ")).")
  var emit: Emit = .swift

  @Option(name: .shortAndLong, help: "Output file (default Generated/GRAPH.swift, .ll or .o).")
  var output: String?

  func run() throws {
    let f = try GraphFile(path: file)
    let shapes = try f.run { () throws(DiagnosticList) in try inferShapes(f.graph, batch: batch) }
    let rows = summarize(f.graph, shapes)
    print("graph \(f.graph.name), batch \(batch)\n")
    let header = ["value", "op", "shape", "params", "MFLOP/img", "activation"]
    var table = [header]
    for r in rows {
      table.append([r.name, r.op, r.type.description, formatCount(r.parameters),
                    r.flopsPerImage == 0 ? "-" : String(format: "%.3f", Double(r.flopsPerImage) / 1e6),
                    formatBytes(r.activationBytes)])
    }
    let params = rows.reduce(0) { $0 + $1.parameters }
    let flops = rows.reduce(0) { $0 + $1.flopsPerImage }
    let act = rows.reduce(0) { $0 + $1.activationBytes }
    table.append(["total", "", "", formatCount(params), String(format: "%.3f", Double(flops) / 1e6), formatBytes(act)])
    printTable(table, rightAligned: [3, 4, 5])
    print("")
    print("parameters:        \(formatCount(params)) (\(formatBytes(params * 4)))")
    print(String(format: "forward:           %.2f MFLOP per image, %.2f GFLOP per batch", Double(flops) / 1e6, Double(flops) * Double(batch) / 1e9))
    print("activations:       \(formatBytes(act)) per batch, unfused and without buffer reuse")

    let programs = try f.run { () throws(DiagnosticList) in try lowerForEmission(f.graph, batch: batch) }
    let paramBytes = programs[0].parameterFloats * 4
    for p in programs {
      if p.loss != nil {
        print("train arena:       \(formatBytes(p.arenaFloats * 4)) (fused, liveness-planned) + parameters, gradients, Adam m and v \(formatBytes(4 * paramBytes)) = \(formatBytes(p.arenaFloats * 4 + 4 * paramBytes))")
      } else {
        print("inference arena:   \(formatBytes(p.arenaFloats * 4)) + parameters \(formatBytes(paramBytes)) = \(formatBytes(p.arenaFloats * 4 + paramBytes))")
      }
    }
    guard emit != .none else { return }
    let ext = ["swift": "swift", "llvm": "ll", "obj": "o"][emit.rawValue]!
    let path = output ?? "Generated/\(f.graph.name).\(ext)"
    let dir = (path as NSString).deletingLastPathComponent
    if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
    switch emit {
    case .swift:
      try SwiftRenderer.render(programs, source: file).write(toFile: path, atomically: true, encoding: .utf8)
    case .llvm:
      try LLVMRenderer.render(programs, moduleName: f.graph.name).text.write(toFile: path, atomically: true, encoding: .utf8)
    case .obj:
      let module = LLVMRenderer.render(programs, moduleName: f.graph.name)
      try module.verify()
      let tm = try TargetMachine()
      try module.optimize(tm)
      try module.emitObject(tm, to: path)
      let header = (path as NSString).deletingPathExtension + ".h"
      try CHeader.render(programs, source: file).write(toFile: header, atomically: true, encoding: .utf8)
      print("wrote \(header)")
    case .none: break
    }
    print("wrote \(path)")
  }
}

/// 421642 -> "421,642".
func formatCount(_ n: Int) -> String {
  let s = String(n)
  var out = ""
  for (i, c) in s.reversed().enumerated() {
    if i > 0 && i % 3 == 0 { out.append(",") }
    out.append(c)
  }
  return String(out.reversed())
}

func formatBytes(_ n: Int) -> String {
  if n < 1024 { return "\(n) B" }
  if n < 1 << 20 { return String(format: "%.1f KiB", Double(n) / 1024) }
  if n < 1 << 30 { return String(format: "%.1f MiB", Double(n) / 1048576) }
  return String(format: "%.1f GiB", Double(n) / 1073741824)
}

func printTable(_ rows: [[String]], rightAligned: Set<Int>) {
  let widths = (0..<rows[0].count).map { c in rows.map { $0[c].count }.max() ?? 0 }
  for (i, r) in rows.enumerated() {
    let cells = r.enumerated().map { c, s in
      let pad = String(repeating: " ", count: widths[c] - s.count)
      return rightAligned.contains(c) ? pad + s : s + pad
    }
    print(cells.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
    if i == 0 || i == rows.count - 2 { print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")) }
  }
}
