import ArgumentParser

/// The `cnnc` command line: a static-graph compiler and trainer for convolutional networks.
@main
struct CNNC: ParsableCommand {
  /// The release, and the `.graph` format version it implements.
  static let version = "cnnc 0.7.1 (.graph format 1.6)"

  static let configuration = CommandConfiguration(
    commandName: "cnnc",
    abstract: "A static-graph compiler and trainer for convolutional networks.",
    discussion: """
      A network is a .graph file (see README.md). cnnc checks it, infers shapes, derives the backward \
      graph, and trains it on MNIST-format data.
      """,
    version: CNNC.version,
    subcommands: [Compile.self, DumpIR.self, Train.self, Eval.self, Predict.self, Infer.self, ReportCommand.self, Bench.self, Quantize.self, Import.self, Export.self])

  /// Parses and runs the command; an error a user can cause that a command did not render itself is
  /// rendered here, as every other is, so none escapes as a raw value dump.
  static func main() {
    do {
      var command = try parseAsRoot()
      try command.run()
    } catch {
      if let message = renderUserFacing(error) {
        printError(message)
        exit(withError: ReportedFailure)
      }
      exit(withError: error)
    }
  }
}
