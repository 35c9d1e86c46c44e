import Foundation
import GraphIR
import Passes
import SwiftProtobuf

/// Writes the inference graph of a model as ONNX: the forward ops that feed the output (the loss and the label
/// dropped, dropout an identity), each as its standard ONNX op, with the weights as initializers under their
/// `state_dict` names.
public enum ONNXExport {
  /// The opset the exported models declare (ONNX Runtime and every current tool read it).
  public static let opset: Int64 = 17
  /// The ONNX IR version of opset 17's release.
  public static let irVersion: Int64 = 8

  /// The serialised model; `tensors` holds every parameter and buffer of `graph` by name, `inputDims` and
  /// `outputDims` the image input's and the output's dimensions after the batch.
  public static func serialize(_ graph: Graph, inputDims: [Int], outputDims: [Int], tensors: [String: (shape: [Int], data: [Float])],
                               producerVersion: String) throws -> Data {
    guard let image = graph.inputs.first(where: { $0.dtype == .f32 }), let output = graph.output else {
      throw ONNXError("the graph has no image input or no output to export")
    }
    var g = Onnx_GraphProto()
    g.name = graph.name
    g.input = [valueInfo(image.name, dims: inputDims)]
    let pruned = prunedToOutput(graph)
    // Sizes for the forms that name them (a channel shuffle's Reshape targets), at batch 1: the batch is copied (0).
    let shapes: ShapeTable
    do { shapes = try inferShapes(pruned, batch: 1) } catch { throw ONNXError("the graph does not check:\n\(error)") }
    var exported = Exported(tensors: tensors, stateKey: graph.stateKey, dims: shapes.types.mapValues(\.dims))
    for node in pruned.nodes { try exported.add(node) }
    g.node = exported.nodes
    g.initializer = exported.initializers
    g.output = [valueInfo(output, dims: outputDims)]
    var model = Onnx_ModelProto()
    model.irVersion = irVersion
    model.producerName = "cnnc"
    model.producerVersion = producerVersion
    var opset = Onnx_OperatorSetIdProto()
    opset.version = Self.opset
    model.opsetImport = [opset]
    model.graph = g
    return try model.serializedBytes()
  }

  /// A float tensor value [N, dims...], N symbolic (the batch).
  static func valueInfo(_ name: String, dims: [Int]) -> Onnx_ValueInfoProto {
    var v = Onnx_ValueInfoProto()
    v.name = name
    var t = Onnx_TypeProto.Tensor()
    t.elemType = Int32(Onnx_TensorProto.DataType.float.rawValue)
    var shape = Onnx_TensorShapeProto()
    var batch = Onnx_TensorShapeProto.Dimension()
    batch.dimParam = "N"
    shape.dim = [batch] + dims.map { d in
      var dim = Onnx_TensorShapeProto.Dimension()
      dim.dimValue = Int64(d)
      return dim
    }
    t.shape = shape
    v.type.tensorType = t
    return v
  }
}

/// The nodes and initializers written so far.
struct Exported {
  let tensors: [String: (shape: [Int], data: [Float])]
  /// The `state_dict` key an initializer takes (`Graph.stateKey`).
  let stateKey: (String) -> String
  /// Each value's dimensions at batch 1.
  let dims: [String: [Int]]
  var nodes: [Onnx_NodeProto] = []
  var initializers: [Onnx_TensorProto] = []

  init(tensors: [String: (shape: [Int], data: [Float])], stateKey: @escaping (String) -> String, dims: [String: [Int]]) {
    self.tensors = tensors
    self.stateKey = stateKey
    self.dims = dims
  }

  /// A 1-D int64 initializer (a Reshape's target shape).
  mutating func int64Initializer(_ name: String, _ values: [Int]) {
    var p = Onnx_TensorProto()
    p.name = name
    p.dims = [Int64(values.count)]
    p.dataType = Int32(Onnx_TensorProto.DataType.int64.rawValue)
    p.int64Data = values.map { Int64($0) }
    initializers.append(p)
  }

  mutating func initializer(_ name: String, _ t: (shape: [Int], data: [Float])) {
    var p = Onnx_TensorProto()
    p.name = name
    p.dims = t.shape.map { Int64($0) }
    p.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
    var bytes = Data(capacity: 4 * t.data.count)
    for v in t.data { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
    p.rawData = bytes
    initializers.append(p)
  }

  /// The parameter or buffer `name` as an initializer input under its `state_dict` key, refused when the weights
  /// lack it.
  mutating func weight(_ name: String) throws -> String {
    guard let t = tensors[name] else { throw ONNXError("the weights have no '\(name)'") }
    initializer(stateKey(name), t)
    return stateKey(name)
  }

  /// A named attribute of `type`, its value set by `value`.
  static func attribute(_ name: String, _ type: Onnx_AttributeProto.AttributeType, _ value: (inout Onnx_AttributeProto) -> Void) -> Onnx_AttributeProto {
    var a = Onnx_AttributeProto()
    a.name = name
    a.type = type
    value(&a)
    return a
  }

  static func attribute(_ name: String, ints: [Int]) -> Onnx_AttributeProto { attribute(name, .ints) { $0.ints = ints.map { Int64($0) } } }
  static func attribute(_ name: String, int: Int) -> Onnx_AttributeProto { attribute(name, .int) { $0.i = Int64(int) } }
  static func attribute(_ name: String, float: Double) -> Onnx_AttributeProto { attribute(name, .float) { $0.f = Float(float) } }

  /// A node of `op` for graph node `n`, writing `output` (by default the value `n` defines), or several outputs.
  mutating func emit(_ op: String, _ n: Node, inputs: [String], _ attributes: [Onnx_AttributeProto] = [], output: String? = nil,
                     outputs: [String]? = nil) {
    var p = Onnx_NodeProto()
    p.opType = op
    p.name = output ?? n.name
    p.input = inputs
    p.output = outputs ?? [output ?? n.name]
    p.attribute = attributes
    nodes.append(p)
  }

  /// The node's ONNX form (`ForwardOp.onnx`), its inputs made into initializers where they are weights.
  mutating func add(_ n: Node) throws {
    guard let op = n.op.definition as? any ForwardOp else {
      throw ONNXError("'\(n.name)' (\(n.op.spelling)) is in the compiler's dialect; only forward graphs are exported")
    }
    switch op.onnx {
    case .none(let reason):
      throw ONNXError("'\(n.name)' (\(n.op.spelling)) has no ONNX form: \(reason)")
    case .node(let type, let inputs, let attributes):
      emit(type, n, inputs: try names(n, inputs), attributes.map(Self.attribute))
    case .quantized(let inner, let q):
      guard case .node(let type, let inputs, let attributes) = inner else { throw ONNXError("'\(n.name)': only a single node has a QDQ form") }
      let input = try quantizeInput(n, q), weight = try quantizedWeight(n, q)
      emit(type, n, inputs: try names(n, inputs, operand0: input, weight: weight), attributes.map(Self.attribute))
    case .gated(let first, let second):
      let gate = "\(n.name).\(first.lowercased())"
      emit(first, n, inputs: [n.args[0]], output: gate)
      emit(second, n, inputs: [n.args[0], gate])
    case .split(let parts, let index):
      let outputs = (0..<parts).map { $0 == index ? n.name : "\(n.name).part\($0)" }
      emit("Split", n, inputs: [n.args[0]], [Self.attribute("axis", int: 1)], outputs: outputs)
    case .channelShuffle(let groups):
      guard let d = dims[n.args[0]], d.count == 4 else { throw ONNXError("'\(n.name)' (channel_shuffle): the export shuffles [N, C, H, W] only") }
      int64Initializer("\(n.name).view", [0, groups, d[1] / groups, d[2], d[3]])
      int64Initializer("\(n.name).back", [0, d[1], d[2], d[3]])
      emit("Reshape", n, inputs: [n.args[0], "\(n.name).view"], output: "\(n.name).grouped")
      emit("Transpose", n, inputs: ["\(n.name).grouped"], [Self.attribute("perm", ints: [0, 2, 1, 3, 4])], output: "\(n.name).transposed")
      emit("Reshape", n, inputs: ["\(n.name).transposed", "\(n.name).back"])
    case .erfGELU:
      let x = n.args[0], name = { (step: String) in "\(n.name).\(step)" }
      for (suffix, value) in [("sqrt2", Float(2).squareRoot()), ("one", 1), ("half", 0.5)] as [(String, Float)] { initializer(name(suffix), ([], [value])) }
      emit("Div", n, inputs: [x, name("sqrt2")], output: name("scaled"))
      emit("Erf", n, inputs: [name("scaled")], output: name("erf"))
      emit("Add", n, inputs: [name("erf"), name("one")], output: name("erf_plus_1"))
      emit("Mul", n, inputs: [x, name("erf_plus_1")], output: name("product"))
      emit("Mul", n, inputs: [name("product"), name("half")])
    }
  }

  /// The names of a node form's inputs, its weights made initializers (or the given replacements of operand 0 and
  /// the weight: a QDQ form's dequantized values).
  mutating func names(_ n: Node, _ inputs: [ONNXInput], operand0: String? = nil, weight replaced: String? = nil) throws -> [String] {
    try inputs.map { input -> String in
      switch input {
      case .operand(let i): return i == 0 ? operand0 ?? n.args[0] : n.args[i]
      case .parameter(let suffix): return suffix == "weight" ? try replaced ?? weight("\(n.name).weight") : try weight("\(n.name).\(suffix)")
      case .filled(let suffix, let value, let like):
        let shape = tensors["\(n.name).\(like)"]?.shape ?? [0]
        initializer("\(n.name).\(suffix)", (shape, [Float](repeating: value, count: shape.reduce(1, *))))
        return "\(n.name).\(suffix)"
      case .scalar(let suffix, let value):
        initializer("\(n.name).\(suffix)", ([], [value]))
        return "\(n.name).\(suffix)"
      }
    }
  }

  /// Operand 0 of node `n` through QuantizeLinear and DequantizeLinear with `q` (a u8 zero point): the dequantized
  /// value's name.
  mutating func quantizeInput(_ n: Node, _ q: Quantization) throws -> String {
    let scale = "\(n.name).input_scale", zero = "\(n.name).input_zero_point"
    initializer(scale, ([], [q.scale]))
    byteInitializer(zero, shape: [], [UInt8(q.zeroPoint)], .uint8)
    emit("QuantizeLinear", n, inputs: [n.args[0], scale, zero], output: "\(n.name).input_quantized")
    emit("DequantizeLinear", n, inputs: ["\(n.name).input_quantized", scale, zero], output: "\(n.name).input_dequantized")
    return "\(n.name).input_dequantized"
  }

  /// Node `n`'s weight as `Int8Arithmetic`'s s8 steps with one scale per output channel, through a DequantizeLinear along
  /// axis 0 whose output takes the weight's `state_dict` key: that name. Steps within ±`q.weightSteps`.
  mutating func quantizedWeight(_ n: Node, _ q: Quantization) throws -> String {
    let name = "\(n.name).weight"
    guard let w = tensors[name], let filters = w.shape.first, filters > 0 else { throw ONNXError("the weights have no '\(name)'") }
    let per = w.data.count / filters
    var steps: [UInt8] = [], scales: [Float] = []
    for f in 0..<filters {
      let filter = w.data[(f * per)..<((f + 1) * per)], scale = Int8Arithmetic.weightScale(filter, steps: q.weightSteps)
      scales.append(scale)
      steps += filter.map { UInt8(bitPattern: Int8(Int8Arithmetic.weight($0, scale: scale, steps: q.weightSteps))) }
    }
    let key = stateKey(name)
    byteInitializer(key + "_quantized", shape: w.shape, steps, .int8)
    initializer(key + "_scale", ([filters], scales))
    byteInitializer(key + "_zero_point", shape: [filters], Array(repeating: 0, count: filters), .int8)
    emit("DequantizeLinear", n, inputs: [key + "_quantized", key + "_scale", key + "_zero_point"], [Self.attribute("axis", int: 0)], output: key)
    return key
  }

  /// An initializer of 8-bit integers (`type` int8 or uint8), raw bytes.
  mutating func byteInitializer(_ name: String, shape: [Int], _ bytes: [UInt8], _ type: Onnx_TensorProto.DataType) {
    var p = Onnx_TensorProto()
    p.name = name
    p.dims = shape.map { Int64($0) }
    p.dataType = Int32(type.rawValue)
    p.rawData = Data(bytes)
    initializers.append(p)
  }

  /// An attribute in ONNX's form.
  static func attribute(_ a: ONNXAttribute) -> Onnx_AttributeProto {
    switch a.value {
    case .int(let v): attribute(a.name, int: v)
    case .ints(let v): attribute(a.name, ints: v)
    case .float(let v): attribute(a.name, float: v)
    }
  }
}
