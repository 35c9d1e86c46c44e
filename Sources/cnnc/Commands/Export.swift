import FileSystem
import ArgumentParser
import Foundation
import GraphIR
import ONNX
import Passes
import Runtime

/// `cnnc export`: a model's inference graph and trained weights as an ONNX file.
struct Export: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write a model's inference graph with its trained weights as an ONNX file (opset 17).",
    discussion: "The ops that feed the graph's output, each as its standard ONNX op (dropout as Identity, batch norm as BatchNormalization with the running statistics); the weights become initializers under their state_dict names.")

  @Argument(help: "The .graph file.") var file: String
  @Option(parsing: .unconditional, help: "Weights in safetensors format (state_dict names).") var weights: String
  @OptionGroup var modelOptions: ModelFileOptions
  @Option(name: .shortAndLong, parsing: .unconditional, help: "The .onnx file to write (default: the graph's name with .onnx).") var output: String?

  func run() throws {
    let model = try TrainedModel(try GraphFile(path: file, verbose: modelOptions.verbose), weights: weights)
    let (f, shapes, params) = (model.file, model.shapes, model.parameters)
    try reportingErrors {
      let image = f.graph.inputs.first { $0.dtype == .f32 }!
      let tensors = Dictionary(uniqueKeysWithValues: (f.graph.parameterNames + f.graph.bufferNames).map { ($0, (shape: params.shapes[$0]!, data: params.values[$0]!)) })
      let data = try ONNXExport.serialize(f.graph, inputDims: Array(shapes[image.name]!.dims.dropFirst()),
                                          outputDims: Array(shapes[f.graph.output!]!.dims.dropFirst()), tensors: tensors, producerVersion: CNNC.version)
      let path = output ?? Path.deletingExtension(file) + ".onnx"
      try writeAtomically(Array(data), to: path)
      print("wrote \(path) (opset \(ONNXExport.opset), \(tensors.count) initializers, \(data.count) bytes)")
    }
  }
}
