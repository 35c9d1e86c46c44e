import ArgumentParser
import GraphIR
import LLVMBackend
import Lowering
import SwiftBackend
import Passes

/// `cnnc dump-ir`: prints the IR after a stage of the pipeline, in the re-parseable `.graph` dialect.
struct DumpIR: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dump-ir",
    abstract: "Print the IR after a pipeline stage, in the .graph dialect (re-parseable).")

  enum Stage: String, ExpressibleByArgument, CaseIterable {
    case parsed, shaped, grad, fused, inference, lowered, swift, llvm
    case llvmOpt = "llvm-opt"
  }

  @Argument(help: "The .graph file.")
  var file: String
  @OptionGroup var modelOptions: ModelFileOptions

  @Option(parsing: .unconditional, help: "Stage to print: \(Stage.allCases.map(\.rawValue).joined(separator: ", ")) (inference: the inference program's graph, batch norms folded and ops fused).")
  var stage: Stage = .shaped

  @Option(parsing: .unconditional, help: "Batch size bound to N.")
  var batch: Int = 64

  @OptionGroup(title: "Target") var targetOptions: TargetOptions

  func run() throws {
    // The first two stages print any dialect (an IR dump re-parses); the others start from a model file.
    let f = try GraphFile(path: file, anyDialect: stage == .parsed || stage == .shaped, verbose: modelOptions.verbose)
    switch stage {
    case .parsed:
      print(Printer.print(f.graph), terminator: "")
    case .shaped:
      let shapes = try f.run { () throws(DiagnosticList) in try inferShapes(f.graph, batch: batch) }
      print(Printer.print(f.graph, types: shapes.types), terminator: "")
    case .grad, .fused:
      let t = try f.run { () throws(DiagnosticList) in
        try Pipeline(batch: batch, purpose: .training).run(f.graph, to: stage == .grad ? .grad : .fused)
      }
      print(Printer.print(t.graph, types: t.shapes.types), terminator: "")
    case .inference:
      let t = try f.run { () throws(DiagnosticList) in try Pipeline(batch: batch, purpose: .inference).run(f.graph, to: .fused) }
      print(Printer.print(t.graph, types: t.shapes.types), terminator: "")
    case .lowered, .swift, .llvm, .llvmOpt:
      let target = try reportingErrors { try targetOptions.resolve(runsHere: false) }
      let programs = try f.run { () throws(DiagnosticList) in try lowerForEmission(f.graph, batch: batch, target: target) }
      switch stage {
      case .lowered: print(programs.map(\.listing).joined(separator: "\n"), terminator: "")
      case .swift: print(SwiftCompiler.source(of: programs, from: file), terminator: "")
      default:
        let module = LLVMRenderer.render(programs, moduleName: f.graph.name)
        if stage == .llvmOpt {
          try module.verify()
          try module.optimize(try TargetMachine(target))
        }
        print(module.text, terminator: "")
      }
    }
  }
}
