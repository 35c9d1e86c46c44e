import ArgumentParser
import GraphIR
import LLVMBackend
import Lowering
import Passes
import Runtime
import SwiftBackend

/// The back ends a command runs on (`--backend`); each command says which it takes.
enum BackendKind: String, ExpressibleByArgument, CaseIterable, Sendable {
  case swift, jit, interp

  /// Refuses a kind the command does not take, naming the ones it does.
  static func check(_ kind: BackendKind, allowed: [BackendKind]) throws {
    guard allowed.contains(kind) else {
      throw ValidationError("--backend \(kind.rawValue) is not available here; choose \(allowed.map(\.rawValue).joined(separator: " or "))")
    }
  }
}

/// A graph with trained weights and the inputs they were trained with (the checkpoint's normalisation and
/// transforms): what eval, predict, report and export read.
struct TrainedModel {
  let file: GraphFile
  let shapes: ShapeTable
  let parameters: Parameters
  /// The normalisation the checkpoint records; nil for weights that record none (an ONNX model's own).
  let recordedNormalization: Normalization?
  /// The evaluation transforms the checkpoint records (none: images as they are).
  let recordedTransforms: [ImageTransform]
  /// The class names the checkpoint records (a model trained on image folders), label order.
  let recordedClassNames: [String]?
  /// The recorded normalisation, else MNIST's (what the commands without `InputOptions` use).
  var normalization: Normalization { recordedNormalization ?? .mnist }
  /// Where the weights came from (a checkpoint, or the model file's own initializers).
  let weightsSource: String

  /// `weights` is a checkpoint; without one, an `.onnx` model's own initializers.
  init(_ file: GraphFile, weights: String?) throws {
    self.file = file
    shapes = try file.run { () throws(DiagnosticList) in try inferShapes(file.graph, batch: 1) }
    var parameters = Parameters(graph: file.graph, shapes: shapes, seed: 0)
    let (st, source) = try file.weights(weights)
    try parameters.load(st, path: source, stateKey: file.graph.stateKey)
    self.parameters = parameters
    recordedNormalization = try Normalization(metadata: st.metadata)
    recordedTransforms = try ImageTransform.recorded(in: st.metadata)
    recordedClassNames = st.metadata[ImageDataset.classNamesKey].map { $0.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) }
    weightsSource = source
  }

  var graph: Graph { file.graph }

  /// A back end that runs this model's inference for calls of `inferenceCalls` images, its weights loaded: the
  /// reference interpreter, or a compiled back end built for `target`.
  func inferenceBackend(_ kind: BackendKind, inferenceCalls: [Int], target: @autoclosure () throws -> Target,
                        cache: ObjectCache?) throws -> any InferenceBackend {
    var backend: any InferenceBackend
    switch kind {
    case .interp: backend = try InterpreterBackend(graph: graph, bf16Products: try target().precision == .bf16)
    case .jit: backend = try CompiledBackend(inferenceOf: graph, compiler: try JITCompiler(target: try target(), cache: cache), inferenceCalls: inferenceCalls)
    case .swift:
      backend = try CompiledBackend(inferenceOf: graph, compiler: try SwiftCompiler(source: file.path, target: try target()), inferenceCalls: inferenceCalls)
    }
    try backend.loadParameters(parameters)
    return backend
  }
}
