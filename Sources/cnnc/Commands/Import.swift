import FileSystem
import ArgumentParser
import Foundation
import GraphIR
import ONNX
import Passes
import Runtime

/// `cnnc import`: an ONNX model as a `.graph` file and its initializers as safetensors.
struct Import: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Translate an ONNX model into a .graph file, with its weights as safetensors under the graph's state_dict names.",
    discussion: "Supported ONNX ops: \(ONNXImport.supported.joined(separator: ", ")). The graph gets a label input and a cross_entropy loss on the model's output, so `cnnc train` trains it; a final Softmax or LogSoftmax is folded into that loss.")

  @Argument(help: "The .onnx file.") var model: String
  @Option(name: .shortAndLong, parsing: .unconditional, help: "The .graph file to write (default: the model's name with .graph).") var output: String?
  @OptionGroup var modelOptions: ModelFileOptions
  @Option(parsing: .unconditional, help: "The safetensors file for the initializers (default: the model's name with .safetensors).") var weightsOut: String?

  func run() throws {
    try reportingErrors {
      let imported = try ONNXImport.read(model)
      let stem = Path.deletingExtension(model)
      let graphPath = output ?? stem + ".graph", weightsPath = weightsOut ?? stem + ".safetensors"
      // The weights must be what the graph's parameters and buffers are: names and shapes.
      let shapes = try inferShapes(imported.graph, batch: 1)
      let g = imported.graph
      for name in g.parameterNames + g.bufferNames {
        let key = g.stateKey(name)
        guard let t = imported.tensors[key] else { throw ONNXError("\(model): no initializer gives \(key)") }
        guard t.shape == shapes[name]!.dims else { throw ONNXError("\(model): \(key) is \(t.shape) in the model; the graph needs \(shapes[name]!.dims)") }
      }
      try checkOutputFile(weightsPath)
      try writeAtomically(Array(imported.text.utf8), to: graphPath)
      // A whole `state_dict`: the step counters (batch norm's `num_batches_tracked`) start at 0, as in a fresh module.
      var weights = SafeTensors(tensors: imported.tensors)
      for c in g.counterNames { weights.integers[g.stateKey(c)] = ([], [0]) }
      try weights.write(to: weightsPath)
      let count = imported.tensors.values.reduce(0) { $0 + $1.data.count }
      print("wrote \(graphPath) (\(imported.graph.nodes.count) statements) and \(weightsPath) (\(imported.tensors.count) tensors, \(count) values)")
      for note in imported.notes + (modelOptions.verbose ? imported.renames : []) { print("note: \(note)") }
      if !modelOptions.verbose, !imported.renames.isEmpty {
        print("note: \(imported.renames.count) layer names were made .graph identifiers (--verbose lists them)")
      }
    }
  }
}
