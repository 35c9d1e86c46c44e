import ArgumentParser
import Foundation
import GraphIR
import Passes

/// `cnnc compile`: checks a graph, infers shapes and prints the plan.
struct Compile: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Check a .graph file, infer shapes and print the plan (parameters, FLOPs, memory).")

  @Argument(help: "The .graph file to compile.")
  var file: String

  @Option(help: "Batch size bound to N.")
  var batch: Int = 64

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
