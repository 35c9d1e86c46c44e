import GraphIR

extension ONNXImport {
  /// ONNX op type -> how the op that reads it does so, from every forward op's `onnxReading`.
  static let readings: [String: @Sendable (any ONNXNodeReader) throws -> ONNXRead] = {
    var table: [String: @Sendable (any ONNXNodeReader) throws -> ONNXRead] = [:]
    for case let op as any ForwardOp.Type in Op.definitions {
      guard case .node(let types, let read) = op.onnxReading else { continue }
      for t in types { table[t] = read }
    }
    return table
  }()

  /// What exporters write around ops, which the import matches itself (`Translator.translate`).
  static let exporterForms = [
    "Identity", "Constant", "Reshape to [N, features] (a flatten)", "ReduceMean over H and W (a global average pool)",
    "MatMul, and Add of a bias after it (a dense layer)", "x * (1 + Erf(x / sqrt 2)) * 0.5 (GELU)",
    "a final Softmax or LogSoftmax (folded into the loss)",
    "Shape, Gather, Unsqueeze, Squeeze, Concat, Cast, Slice, Add, Sub, Mul, Div (computing a Reshape's shape or a Slice's bounds)",
  ]

  /// The ONNX op types and patterns the import maps to `.graph` ops: each op's reading, then the exporters' forms.
  public static let supported: [String] = {
    var r: [String] = []
    for op in Op.definitions {
      guard let op = op as? any ForwardOp.Type else { continue }
      switch op.onnxReading {
      case .node(let types, _): r += types
      case .pattern(let p): r.append("\(p) (\(op.syntax.name))")
      case .none: break
      }
    }
    return r + exporterForms
  }()
}

/// A node of the model being translated, as the ops' readings see it.
struct NodeReader: ONNXNodeReader {
  let translator: Translator
  let node: Onnx_NodeProto

  var opType: String { node.opType }
  var inputCount: Int { node.input.count }
  var outputCount: Int { node.output.count }
  func hasOutput(_ i: Int) -> Bool { i < node.output.count && !node.output[i].isEmpty }
  func isActivation(_ i: Int) -> Bool { i < node.input.count && translator.values[node.input[i]] != nil }
  func constant(_ i: Int) throws -> ONNXTensor? { try translator.weight(node, i) }
  func int(_ key: String) -> Int? { translator.int(node, key) }
  func ints(_ key: String) -> [Int]? { translator.ints(node, key) }
  func float(_ key: String) -> Float? { translator.float(node, key) }
  func string(_ key: String) -> String? { translator.string(node, key) }
  func fail(_ message: String) -> any Error { translator.fail(node, message) }
}
