import FileSystem
import Foundation
import GraphIR
import SwiftProtobuf

/// An ONNX model read as a `.graph`: its text (the forward ops, plus a label input and a cross-entropy loss on
/// the output so that it trains), the parsed graph, and its initializers under the `state_dict` names the
/// graph's parameters take.
public struct ImportedModel: Sendable {
  public var text: String
  public var graph: Graph
  /// Parameters and buffers by their `state_dict` keys (`conv1.weight`, `layer1.0.bn1.running_mean`: the graph's
  /// `stateKey`s), row-major.
  public var tensors: [String: (shape: [Int], data: [Float])]
  /// What the import changed that its user should know (a trailing softmax folded into the loss).
  public var notes: [String]
  /// The layers whose `state_dict` prefix is not a `.graph` identifier, the node names they got, and whether a
  /// `state` statement keeps their weights' keys.
  public var renames: [String]
}

/// A model file cnnc cannot import (the message names the file, and the node and its op type when one is to
/// blame), or a graph it cannot export.
public struct ONNXError: UserFacingError {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// Reads ONNX models (opset 7 and later; torch.onnx writes 13 to 23) into the `.graph` language.
public enum ONNXImport {
  /// The largest file read: models with more weights than this keep them in external data, which cnnc does
  /// not read.
  public static let maxFileBytes = 1 << 30
  /// Reads and translates the model at `path`.
  public static func read(_ path: String) throws -> ImportedModel {
    // The file's bytes live only until they parse: with the parsed weights and the translated ones, a third copy
    // of a large model would set the import's peak memory.
    let model: Onnx_ModelProto
    do { model = try parse(try readRegularFile(path, maxBytes: maxFileBytes), path: path) } catch let e as FileError { throw ONNXError("\(e)") }
    return try translate(model, path: path)
  }

  /// Translates the bytes of an ONNX model; `path` names it in messages.
  public static func translate(_ data: Data, path: String) throws -> ImportedModel {
    try translate(try parse(data, path: path), path: path)
  }

  /// The model the bytes `data` hold.
  static func parse<Bytes: SwiftProtobufContiguousBytes>(_ data: Bytes, path: String) throws -> Onnx_ModelProto {
    do {
      return try Onnx_ModelProto(serializedBytes: data)
    } catch {
      throw ONNXError("\(path): not an ONNX model (the protobuf does not parse: \(error))")
    }
  }

  /// Translates a parsed ONNX model.
  static func translate(_ model: Onnx_ModelProto, path: String) throws -> ImportedModel {
    guard model.hasGraph, !model.graph.node.isEmpty else { throw ONNXError("\(path): the model has no graph (no nodes)") }
    // Named after the file: exporters name every graph alike (torch.onnx: "main_graph").
    var t = Translator(path: path, name: identifier(Path.stem(path)))
    try t.run(model.graph)
    let draft = t.text()
    let graph: Graph
    do {
      graph = try Parser.parse(draft, defaultName: t.name)
    } catch {
      throw ONNXError("\(path): the translated graph does not parse (a defect of the import):\n\(error)\n\(draft)")
    }
    // Printed as the compiler prints graphs (aligned, as the hand-written ones are), under a header naming the source.
    let text = "# Imported by cnnc from \(Path.lastComponent(path)): the ONNX graph's ops, and a cross-entropy\n"
      + "# loss on its output so that it trains.\n" + Printer.print(graph)
    return ImportedModel(text: text, graph: graph, tensors: t.tensors, notes: t.notes, renames: t.renames)
  }

  /// A `.graph` identifier from an ONNX name: letters, digits and underscores, not starting with a digit.
  static func identifier(_ s: String) -> String {
    var out = String(s.map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" })
    while out.hasPrefix("_") { out.removeFirst() }
    while out.hasSuffix("_") { out.removeLast() }
    if out.isEmpty || out.first!.isNumber { out = "v" + out }
    return out
  }
}

/// The state of one translation: ONNX tensor names to `.graph` values, the statements so far, the weights.
struct Translator {
  let path: String
  let name: String
  var initializers: [String: Onnx_TensorProto] = [:]
  /// ONNX value name -> the `.graph` value holding it.
  var values: [String: String] = [:]
  var used = Set<String>()
  var statements: [String] = []
  var input = ""
  /// The input's batch size where the model fixes one (the import makes it N).
  var exportedBatch: Int?
  var tensors: [String: (shape: [Int], data: [Float])] = [:]
  var notes: [String] = []
  var renames: [String] = []
  /// Node -> the `state_dict` prefix its weights keep (`state` statements), where it is not the node's name.
  var stateNames: [String: String] = [:]
  var output = ""
  /// ONNX values that hold shapes, not activations (outputs of `Translator.shapeOps`), kept symbolic.
  var shapeValues: [String: ShapeValue] = [:]
  /// Reshapes of an activation to [N, groups, C / groups, H, W] awaiting the Transpose of a channel shuffle.
  var views: [String: (x: String, groups: Int)] = [:]
  /// Such views transposed, awaiting the Reshape back that makes them a `channel_shuffle`.
  var transposed: [String: (x: String, groups: Int)] = [:]
  /// Steps of GELU's exported formula: each value's x and how far along it is.
  var geluParts: [String: (x: String, stage: GELUStage)] = [:]
  /// Sigmoid outputs: the statement that defines each and the ONNX value it is the sigmoid of (a Mul of the two is SiLU).
  var sigmoids: [String: (statement: Int, input: String)] = [:]
  /// How many nodes read each ONNX value (and 1 more for the graph's output).
  var readers: [String: Int] = [:]
  /// Convs whose weight the exporter computed (not a `state_dict` key) and that have a bias: what folding a batch
  /// norm into each conv (an eval-mode export) leaves.
  var computedConvs = 0
  /// Whether any BatchNormalization was read.
  var sawBatchNorm = false
  /// QuantizeLinear outputs awaiting their DequantizeLinear: the `.graph` value quantized, and how.
  var quantized: [String: (input: String, scale: Float, zero: Int, unsigned: Bool)] = [:]
  /// DequantizeLinear outputs of quantize-dequantize pairs: the quantization a conv reading one takes.
  var fakeQuantized: [String: Quantization] = [:]
  /// Float initializers folded from DequantizeLinear: the largest |step| (a conv's weights in the reduced range when
  /// at most 64).
  var largestSteps: [String: Int] = [:]
  /// Convs read as int8 convs from the QDQ form.
  var int8Nodes = 0
  /// `.graph` dense nodes without bias (from MatMul) that a following Add may give one: statement index.
  var biasless: [String: (statement: Int, units: Int)] = [:]

  init(path: String, name: String) {
    self.path = path
    self.name = name
  }

  func fail(_ node: Onnx_NodeProto, _ message: String) -> ONNXError {
    ONNXError("\(path): node '\(node.name.isEmpty ? node.output.first ?? "?" : node.name)' (\(node.opType)): \(message)")
  }

  mutating func run(_ g: Onnx_GraphProto) throws {
    for i in g.initializer { initializers[i.name] = i }
    let inputs = g.input.filter { initializers[$0.name] == nil }
    guard inputs.count == 1 else {
      throw ONNXError("\(path): the graph has \(inputs.count) inputs besides its initializers; cnnc imports models with one image input")
    }
    try declareInput(inputs[0])
    guard g.output.count == 1 else { throw ONNXError("\(path): the graph has \(g.output.count) outputs; cnnc imports models with one output") }
    let outputName = g.output[0].name
    for node in g.node { for v in node.input { readers[v, default: 0] += 1 } }
    readers[outputName, default: 0] += 1
    for node in g.node {
      guard node.domain.isEmpty || node.domain == "ai.onnx" else { throw fail(node, "the op domain '\(node.domain)' is not the standard one") }
      try translate(node, isLast: node.output.first == outputName)
    }
    guard let out = values[outputName] else { throw ONNXError("\(path): the graph's output '\(outputName)' is not computed by its nodes") }
    output = out
    if !fakeQuantized.isEmpty {
      notes.append("\(fakeQuantized.count) quantize-dequantize pairs read as clips to their range, \(int8Nodes) of them before convs of one group or dense layers, which run in int8 (input_scale)")
    }
    if computedConvs > 0, !sawBatchNorm {
      notes.append("\(computedConvs) convs have weights and biases the exporter computed, as an eval-mode export does when it folds "
        + "each batch norm into the conv before it: this model trains without batch norm. To keep it, export in training mode "
        + "(torch.onnx.export(..., training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False))")
    }
  }

  mutating func declareInput(_ v: Onnx_ValueInfoProto) throws {
    let type = v.type.tensorType
    guard type.elemType == Int32(Onnx_TensorProto.DataType.float.rawValue) else {
      throw ONNXError("\(path): input '\(v.name)' is not float32; cnnc imports float32 image models")
    }
    let dims = type.shape.dim
    guard dims.count == 4 || dims.count == 2 else {
      throw ONNXError("\(path): input '\(v.name)' has rank \(dims.count); cnnc imports [N, C, H, W] images or [N, features]")
    }
    var shape = ["N"]
    if case .dimValue(let n)? = dims.first?.value, n > 0 { exportedBatch = Int(n) }
    for d in dims.dropFirst() {
      guard case .dimValue(let n)? = d.value, n > 0 else { throw ONNXError("\(path): input '\(v.name)' has a dimension without a size after the batch") }
      shape.append("\(n)")
    }
    input = fresh(v.name == "input" || v.name.isEmpty ? "image" : v.name)
    values[v.name] = input
    statements.append("input \(input): f32[\(shape.joined(separator: ", "))]")
  }

  /// A `.graph` name from an ONNX one, made unique.
  mutating func fresh(_ hint: String) -> String {
    let base = ONNXImport.identifier(hint)
    var candidate = base, k = 2
    while used.contains(candidate) || ["label", "loss"].contains(candidate) {
      candidate = "\(base)_\(k)"
      k += 1
    }
    used.insert(candidate)
    return candidate
  }

  /// The layer name of a node: its weight's `state_dict` prefix (`conv1` of `conv1.weight`), else the
  /// module path of the node's name (`/layer1/conv/Conv` gives `layer1_conv`), else the op type.
  mutating func layerName(_ node: Onnx_NodeProto, weight: String?) -> String {
    if let weight, weight.hasSuffix(".weight") {
      let prefix = String(weight.dropLast(7)), name = fresh(prefix)
      guard name != prefix else { return name }
      if Graph.isStatePrefix(prefix), !stateNames.values.contains(prefix) {
        stateNames[name] = prefix
        renames.append("'\(prefix)' is named '\(name)' in the .graph (names are identifiers); a state statement keeps its weights' keys ('\(prefix).weight')")
      } else {
        renames.append("'\(prefix)' is named '\(name)' in the .graph (names are identifiers); its weights are saved as '\(name).weight'")
      }
      return name
    }
    let path = node.name.split(separator: "/").dropLast()
    return fresh(path.isEmpty ? node.opType.lowercased() : path.joined(separator: "_"))
  }

  func operand(_ node: Onnx_NodeProto, _ i: Int) throws -> String {
    if i < node.input.count, geluParts[node.input[i]] != nil {
      throw fail(node, "input \(i + 1) ('\(node.input[i])') is part of a GELU formula, x * (1 + Erf(x / sqrt 2)) * 0.5, that it does not complete; "
        + "cnnc takes Div, Erf and sums or products with constants only in that formula")
    }
    guard i < node.input.count, let v = values[node.input[i]] else {
      throw fail(node, "input \(i + 1) ('\(i < node.input.count ? node.input[i] : "")') is neither the image nor an earlier node's output")
    }
    return v
  }

  func weight(_ node: Onnx_NodeProto, _ i: Int) throws -> (shape: [Int], data: [Float])? {
    guard i < node.input.count, !node.input[i].isEmpty else { return nil }
    guard let t = initializers[node.input[i]] else { throw fail(node, "input \(i + 1) ('\(node.input[i])') must be an initializer (a constant weight)") }
    return try floats(t, node)
  }

  /// The bytes of a tensor kept in an external file (`location`, `offset`, `length`), as torch.onnx writes
  /// weights beside the model (`model.onnx.data`): a regular file in the model's directory (symbolic links may
  /// not lead out of it), the range checked against the file's size before anything is read.
  func externalBytes(_ t: Onnx_TensorProto, _ node: Onnx_NodeProto) throws -> [UInt8] {
    let entries = Dictionary(t.externalData.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
    guard let location = entries["location"], !location.isEmpty, !location.hasPrefix("/"), !location.split(separator: "/").contains("..") else {
      throw fail(node, "'\(t.name)' names no external data file in the model's directory")
    }
    let directory = Path.parent(path), file = Path.join(directory, location)
    guard fileStatus(file) != nil else { throw fail(node, "'\(t.name)' keeps its data in \(file), which cannot be read: \(String(cString: strerror(errno)))") }
    guard isInside(file, directory: directory) else {
      throw fail(node, "'\(t.name)' keeps its data in \(file), which a symbolic link places outside the model's directory")
    }
    let offset = Int(entries["offset"] ?? "0"), length = entries["length"].map { Int($0) }
    guard let offset, offset >= 0, length.map({ $0.map { (0...ONNXImport.maxFileBytes).contains($0) } ?? false }) ?? true else {
      throw fail(node, "'\(t.name)': the offset '\(entries["offset"] ?? "")' or length '\(entries["length"] ?? "")' for \(file) is not a byte count")
    }
    do {
      let f = try RegularFile(file)
      guard offset <= f.size else { throw FileError("offset \(offset) is past the end of the file's \(f.size) bytes") }
      let count = length.flatMap { $0 } ?? min(f.size - offset, ONNXImport.maxFileBytes)
      guard count <= f.size - offset else { throw FileError("it ends before the \(count) bytes at offset \(offset) (the file has \(f.size))") }
      return try f.read(offset: offset, count: count)
    } catch let e as FileError {
      throw fail(node, "'\(t.name)' keeps its data in \(file): \(e)")
    }
  }

  func floats(_ t: Onnx_TensorProto, _ node: Onnx_NodeProto) throws -> (shape: [Int], data: [Float]) {
    guard t.dataType == Int32(Onnx_TensorProto.DataType.float.rawValue) else { throw fail(node, "'\(t.name)' is not float32") }
    let shape = t.dims.map { Int($0) }
    guard shape.allSatisfy({ $0 >= 0 }), let count = shape.reduce(Int?(1), { a, d in a.flatMap { $0.multipliedReportingOverflow(by: d).overflow ? nil : $0 * d } }),
          count <= ONNXImport.maxFileBytes / 4 else { throw fail(node, "'\(t.name)' has an absurd shape \(shape)") }
    let data: [Float]
    let raw = t.dataLocation == .external ? Data(try externalBytes(t, node)) : t.rawData
    if !raw.isEmpty || t.dataLocation == .external {
      guard raw.count == 4 * count else { throw fail(node, "'\(t.name)' holds \(raw.count) bytes for \(count) float32 values") }
      data = raw.withUnsafeBytes { raw in (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) } }
    } else {
      guard t.floatData.count == count else { throw fail(node, "'\(t.name)' holds \(t.floatData.count) values for shape \(shape)") }
      data = t.floatData
    }
    return (shape, data)
  }

  /// The values of an int64 tensor (a shape, axes), from its typed field or its raw little-endian bytes.
  func int64s(_ t: Onnx_TensorProto) -> [Int] {
    guard t.int64Data.isEmpty else { return t.int64Data.map { Int($0) } }
    return t.rawData.withUnsafeBytes { raw in (0..<(raw.count / 8)).map { Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) } }
  }

  func ints(_ node: Onnx_NodeProto, _ key: String) -> [Int]? {
    node.attribute.first { $0.name == key }.map { $0.ints.map { Int($0) } }
  }

  func int(_ node: Onnx_NodeProto, _ key: String) -> Int? { node.attribute.first { $0.name == key }.map { Int($0.i) } }
  func float(_ node: Onnx_NodeProto, _ key: String) -> Float? { node.attribute.first { $0.name == key }.map { $0.f } }

  func string(_ node: Onnx_NodeProto, _ key: String) -> String? {
    node.attribute.first { $0.name == key }.map { String(decoding: $0.s, as: UTF8.self) }
  }

  mutating func define(_ node: Onnx_NodeProto, _ name: String, _ expression: String) {
    statements.append("\(name) = \(expression)")
    values[node.output[0]] = name
  }

  mutating func translate(_ node: Onnx_NodeProto, isLast: Bool) throws {
    guard !node.output.isEmpty else { throw fail(node, "the node has no output") }
    if takesConstant(node) { return }
    if try computesShapes(node) { return }
    if try geluStep(node) { return }
    if try quantizeDequantize(node) { return }
    switch node.opType {
    case "Identity": values[node.output[0]] = try operand(node, 0)
    case "Reshape" where try channelShuffle(node): break
    case "Transpose":
      guard let v = views[node.input[0]], ints(node, "perm") == [0, 2, 1, 3, 4] else {
        throw fail(node, "cnnc takes Transpose only in a channel shuffle (perm [0, 2, 1, 3, 4] of a Reshape to [N, groups, C / groups, H, W])")
      }
      transposed[node.output[0]] = v
    case "Split": try split(node)
    case "Slice": try sliceChannels(node)
    case "Reshape": try reshape(node)
    case "ReduceMean": try reduceMean(node)
    case "MatMul": try matmul(node)
    case "Add" where try denseBias(node): break
    case "Mul" where try siluProduct(node): break
    case "Concat" where node.input.count == 1:
      try checkReading(node, as: "Concat")
      values[node.output[0]] = try operand(node, 0)
    case "Softmax" where isLast, "LogSoftmax" where isLast:
      // The loss is cross_entropy on the logits: softmax and log-softmax there are folded into it, over the axis
      // cnnc's softmax takes.
      try checkReading(node, as: "Softmax")
      values[node.output[0]] = try operand(node, 0)
      notes.append("the final \(node.opType) is folded into the loss: the graph's output is the logits before it (the same predicted classes)")
    case "LogSoftmax": throw fail(node, "LogSoftmax inside the network: cnnc has softmax, and folds only a final LogSoftmax into the loss")
    default:
      guard let read = ONNXImport.readings[node.opType] else {
        throw fail(node, "not supported; cnnc imports \(ONNXImport.supported.joined(separator: ", "))")
      }
      try define(node, read(NodeReader(translator: self, node: node)))
    }
  }

  /// Applies the rules of the op that reads `type` (its attributes' checks) to a node the import takes otherwise:
  /// a one-input Concat is its input, a final softmax folds into the loss.
  func checkReading(_ node: Onnx_NodeProto, as type: String) throws {
    _ = try ONNXImport.readings[type]!(NodeReader(translator: self, node: node))
  }

  /// Defines the op a node was read as, under its layer name, with its parameters and buffers.
  mutating func define(_ node: Onnx_NodeProto, _ read: ONNXRead) throws {
    let operands = try read.operands.map { try operand(node, $0) }
    let name = layerName(node, weight: read.namedBy.map { node.input[$0] })
    for (suffix, value) in read.tensors { tensors[key(name, suffix)] = value }
    switch read.op {
    // A Mul of x and this sigmoid becomes silu.
    case .sigmoid: sigmoids[node.output[0]] = (statements.count, node.input[0])
    case .batchNorm: sawBatchNorm = true
    // The TorchScript exporter names folded weights `onnx::Conv_N`; the default exporter keeps the weight's name
    // and calls the bias it makes `NAME.weight_bias`.
    case .conv2d(let a) where a.bias:
      if !node.input[1].hasSuffix(".weight") || node.input[2].hasSuffix(".weight_bias") { computedConvs += 1 }
    default: break
    }
    var op = read.op
    // A conv of one group or a dense layer whose input went through a quantize-dequantize pair is an int8 layer.
    if var q = fakeQuantized[node.input[0]], let w = read.tensors.first(where: { $0.0 == "weight" })?.1,
       w.shape.dropFirst().reduce(1, *) <= Int8Arithmetic.maxTerms {
      // Weights quantized in the reduced range keep it (their steps then come back exactly).
      let reduced = Int(Int8Arithmetic.reducedWeightSteps)
      if node.input.count > 1, let largest = largestSteps[node.input[1]], largest > 0, largest <= reduced { q.weightSteps = reduced }
      if case .conv2d(var a) = op, !a.isDirect {
        a.quantization = q
        (op, int8Nodes) = (.conv2d(a), int8Nodes + 1)
      } else if case .dense(var a) = op {
        a.quantization = q
        (op, int8Nodes) = (.dense(a), int8Nodes + 1)
      }
    }
    define(node, name, Printer.expression(op, operands))
  }

  /// A Reshape to [N, features], as a flatten: a constant shape is checked; a computed one
  /// (x.view(x.size(0), -1)) is taken as that, and shape inference checks the layers after it.
  mutating func reshape(_ node: Onnx_NodeProto) throws {
    if node.input.count > 1, let t = initializers[node.input[1]] {
      let shape = int64s(t)
      // A model exported for a fixed batch names it (the input's batch dimension, which cnnc makes N).
      guard shape.count == 2, [0, -1, exportedBatch].contains(shape[0]) || shape[1] == -1 else {
        throw fail(node, "reshape to \(shape): cnnc reshapes only to [N, features] (a flatten)")
      }
    } else if node.input.count < 2 || shapeValues[node.input[1]] == nil {
      throw fail(node, "the target shape must be a constant or computed from shapes")
    }
    define(node, layerName(node, weight: nil), "flatten(\(try operand(node, 0)))")
  }

  /// Takes a node that only names a constant (true): an Identity of an initializer (torch.onnx's TorchScript
  /// exporter reads de-duplicated initializers, zero biases and fresh batch-norm state, through them), or a
  /// Constant holding a tensor; their outputs are then initializers like any other.
  mutating func takesConstant(_ node: Onnx_NodeProto) -> Bool {
    if node.opType == "Identity", node.input.count == 1, let t = initializers[node.input[0]] {
      initializers[node.output[0]] = t
      return true
    }
    if node.opType == "Constant", let value = node.attribute.first(where: { $0.name == "value" }), value.hasT {
      var t = value.t
      t.name = node.output[0]
      initializers[node.output[0]] = t
      return true
    }
    return false
  }

  /// Takes a Reshape of a channel shuffle (true): to [N, groups, C / groups, H, W] (a constant target, or one
  /// computed from shapes with constant groups), or back to 4-D after the Transpose, which makes `channel_shuffle`.
  mutating func channelShuffle(_ node: Onnx_NodeProto) throws -> Bool {
    guard node.input.count > 1 else { return false }
    let target = node.input[1]
    // The target's length and element i, where constant.
    let known = elements(target)
    func element(_ i: Int) -> Int? { known.flatMap { i < $0.count ? $0[i].constant : nil } }
    let length = known?.count
    if let t = transposed[node.input[0]] {
      guard length == 4 else { throw fail(node, "after a channel shuffle's Transpose, cnnc takes only the Reshape back to [N, C, H, W]") }
      define(node, layerName(node, weight: nil), "channel_shuffle(\(t.x), groups: \(t.groups))")
      return true
    }
    guard length == 5, values[node.input[0]] != nil else { return false }
    guard let groups = element(1), groups > 0 else {
      throw fail(node, "reshape to 5-D: cnnc takes it only as a channel shuffle's [N, groups, C / groups, H, W] with constant groups")
    }
    views[node.output[0]] = (try operand(node, 0), groups)
    return true
  }

  /// Channels split into equal parts (`x.chunk(k, 1)`): one `chunk` per output.
  mutating func split(_ node: Onnx_NodeProto) throws {
    let x = try operand(node, 0)
    guard (int(node, "axis") ?? 0) == 1 else { throw fail(node, "axis \(int(node, "axis") ?? 0): cnnc splits channels (axis 1) only") }
    let parts = node.output.count
    var sizes = ints(node, "split")
    if node.input.count > 1, !node.input[1].isEmpty {
      guard let t = initializers[node.input[1]] else { throw fail(node, "the split sizes must be a constant") }
      sizes = int64s(t)
    }
    if let sizes, sizes.count != parts || Set(sizes).count != 1 {
      throw fail(node, "split sizes \(sizes): cnnc splits channels into equal parts")
    }
    if let k = int(node, "num_outputs"), k != parts { throw fail(node, "num_outputs \(k) for \(parts) outputs") }
    let base = layerName(node, weight: nil)
    // Outputs nothing reads (a cnnc export writes one Split per chunk) make no statement.
    for (i, out) in node.output.enumerated() where !out.isEmpty && readers[out, default: 0] > 0 {
      let name = fresh("\(base)_\(i)")
      statements.append("\(name) = chunk(\(x), chunks: \(parts), index: \(i))")
      values[out] = name
    }
  }

  /// Takes x times its own sigmoid (true), as SiLU is exported: the sigmoid's statement becomes `silu` when
  /// nothing else reads it. Any other product is the `mul` op's.
  mutating func siluProduct(_ node: Onnx_NodeProto) throws -> Bool {
    guard node.input.count == 2 else { return false }
    for (gate, x) in [(node.input[1], node.input[0]), (node.input[0], node.input[1])] {
      guard let s = sigmoids[gate], s.input == x else { continue }
      let operand = try operand(node, gate == node.input[1] ? 0 : 1)
      if readers[gate] == 1 {
        let name = values[gate]!
        statements[s.statement] = "\(name) = silu(\(operand))"
        values[node.output[0]] = name
      } else {
        define(node, layerName(node, weight: nil), "silu(\(operand))")
      }
      return true
    }
    return false
  }

  /// A mean over H and W (what the default exporter writes for adaptive average pooling to 1x1): a global
  /// average pool, flattened when the reduced axes are dropped (`keepdims` 0). The axes are an attribute before
  /// opset 18 and an input from it.
  mutating func reduceMean(_ node: Onnx_NodeProto) throws {
    let x = try operand(node, 0)
    var axes = ints(node, "axes")
    if node.input.count > 1, !node.input[1].isEmpty {
      guard let t = initializers[node.input[1]], t.dataType == Int32(Onnx_TensorProto.DataType.int64.rawValue) else {
        throw fail(node, "the axes input must be a constant int64 tensor")
      }
      axes = int64s(t)
    }
    guard let axes, Set(axes.map { $0 < 0 ? $0 + 4 : $0 }) == [2, 3] else {
      throw fail(node, "attribute 'axes' is \(ints(node, "axes").map { "\($0)" } ?? "absent"); cnnc takes ReduceMean over H and W of [N, C, H, W] only (a global average pool)")
    }
    let name = layerName(node, weight: nil)
    if (int(node, "keepdims") ?? 1) == 0 {
      let pool = fresh("\(name)_pool")
      statements.append("\(pool) = global_avgpool(\(x))")
      define(node, name, "flatten(\(pool))")
    } else {
      define(node, name, "global_avgpool(\(x))")
    }
  }

  mutating func matmul(_ node: Onnx_NodeProto) throws {
    let x = try operand(node, 0)
    guard let b = try weight(node, 1), b.shape.count == 2 else { throw fail(node, "the second operand must be a 2-D initializer [in, out]") }
    let name = layerName(node, weight: node.input[1])
    tensors[key(name, "weight")] = transposedMatrix(b)
    biasless[name] = (statements.count, b.shape[1])
    define(node, name, "dense(\(x), units: \(b.shape[1]), bias: false)")
  }

  /// Takes MatMul + Add of a constant vector (true): the dense layer the MatMul made gets the vector as its bias.
  mutating func denseBias(_ node: Onnx_NodeProto) throws -> Bool {
    guard node.input.count == 2, let c = node.input.firstIndex(where: { initializers[$0] != nil }) else { return false }
    let x = try operand(node, 1 - c)
    guard let dense = biasless[x], let bias = try weight(node, c), bias.shape == [dense.units] else {
      throw fail(node, "adding a constant is supported only as the bias after a MatMul")
    }
    statements[dense.statement] = statements[dense.statement].replacingOccurrences(of: ", bias: false)", with: ")")
    tensors[key(x, "bias")] = bias
    biasless[x] = nil
    values[node.output[0]] = x
    return true
  }

  /// The `state_dict` key of a parameter or buffer of node `node`.
  func key(_ node: String, _ suffix: String) -> String { "\(stateNames[node] ?? node).\(suffix)" }

  /// The `.graph` text: the input, the label, the statements, the loss, the state prefixes.
  func text() -> String {
    let body = statements.dropFirst() + stateNames.sorted { $0.key < $1.key }.map { "state \($0.key) \"\($0.value)\"" }
    return """
      graph \(name)

      \(statements[0])
      input label: i32[N]

      \(body.joined(separator: "\n"))
      loss = cross_entropy(\(output), label)

      output \(output)
      minimize loss

      """
  }
}
