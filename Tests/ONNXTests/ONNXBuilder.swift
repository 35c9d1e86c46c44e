import Foundation

/// Writes small ONNX models byte by byte (protobuf's wire format, the fields onnx.proto numbers), so tests can make
/// the models an exporter would not: a NaN attribute, a stride of 0, external data at an absurd offset.
struct ONNXBuilder {
  /// One protobuf message under construction.
  struct Message {
    var bytes: [UInt8] = []

    mutating func varint(_ v: UInt64) {
      var v = v
      while v >= 0x80 {
        bytes.append(UInt8(v & 0x7F) | 0x80)
        v >>= 7
      }
      bytes.append(UInt8(v))
    }
    mutating func tag(_ field: Int, _ wire: Int) { varint(UInt64(field << 3 | wire)) }
    mutating func int(_ field: Int, _ v: Int) {
      tag(field, 0)
      varint(UInt64(bitPattern: Int64(v)))
    }
    mutating func float(_ field: Int, _ v: Float) {
      tag(field, 5)
      withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 }
    }
    mutating func bytes(_ field: Int, _ b: [UInt8]) {
      tag(field, 2)
      varint(UInt64(b.count))
      bytes += b
    }
    mutating func string(_ field: Int, _ s: String) { bytes(field, Array(s.utf8)) }
    mutating func message(_ field: Int, _ m: Message) { bytes(field, m.bytes) }
  }

  /// An attribute value: a float, an int, a list of ints or a string.
  enum Attribute {
    case float(Float), int(Int), ints([Int]), string(String)
    /// A float tensor (a Constant's `value`): its dims and values.
    case tensor([Int], [Float])
  }

  static func attribute(_ name: String, _ value: Attribute) -> Message {
    var a = Message()
    a.string(1, name)
    switch value {
    case .float(let f): a.float(2, f); a.int(20, 1)
    case .int(let i): a.int(3, i); a.int(20, 2)
    case .string(let s): a.string(4, s); a.int(20, 3)
    case .ints(let v): for i in v { a.int(8, i) }; a.int(20, 7)
    case .tensor(let dims, let values): a.message(5, tensor(dims: dims, values: values)); a.int(20, 4)
    }
    return a
  }

  /// A float tensor with raw little-endian data.
  static func tensor(name: String? = nil, dims: [Int], values: [Float]) -> Message {
    var t = Message()
    for d in dims { t.int(1, d) }
    t.int(2, 1)  // FLOAT
    if let name { t.string(8, name) }
    t.bytes(9, values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } })
    return t
  }

  /// Adds an int64 initializer (raw little-endian data), such as the axes of a ReduceMean.
  mutating func int64Initializer(_ name: String, _ values: [Int]) {
    var t = Message()
    t.int(1, values.count)
    t.int(2, 7)  // INT64
    t.string(8, name)
    t.bytes(9, values.flatMap { v in withUnsafeBytes(of: Int64(v).littleEndian) { Array($0) } })
    initializers.append(t)
  }

  var nodes: [Message] = []
  var initializers: [Message] = []
  var inputDims: [Int]
  var output = ""

  init(inputDims: [Int]) { self.inputDims = inputDims }

  /// Adds a node; its output is named `output` and becomes the graph's output.
  mutating func node(_ op: String, _ inputs: [String], _ output: String, _ attributes: [(String, Attribute)] = []) {
    node(op, inputs, outputs: [output], attributes)
  }

  /// Adds a node with several outputs (Split); the first becomes the graph's output.
  mutating func node(_ op: String, _ inputs: [String], outputs: [String], _ attributes: [(String, Attribute)] = []) {
    let output = outputs[0]
    var n = Message()
    for i in inputs { n.string(1, i) }
    for o in outputs { n.string(2, o) }
    n.string(3, "/\(output)/\(op)")
    n.string(4, op)
    for (k, v) in attributes { n.message(5, Self.attribute(k, v)) }
    nodes.append(n)
    self.output = output
  }

  /// Adds a float initializer, inline, or kept in an external file with the given entries (location, offset, length).
  mutating func initializer(_ name: String, dims: [Int], values: [Float], external: [(String, String)]? = nil) {
    guard let external else {
      initializers.append(Self.tensor(name: name, dims: dims, values: values))
      return
    }
    var t = Message()
    for d in dims { t.int(1, d) }
    t.int(2, 1)  // FLOAT
    t.string(8, name)
    for (k, v) in external {
      var e = Message()
      e.string(1, k)
      e.string(2, v)
      t.message(13, e)
    }
    t.int(14, 1)  // EXTERNAL
    initializers.append(t)
  }

  static func valueInfo(_ name: String, _ dims: [Int?]) -> Message {
    var shape = Message()
    for d in dims {
      var dim = Message()
      if let d { dim.int(1, d) } else { dim.string(2, "N") }
      shape.message(1, dim)
    }
    var tensor = Message()
    tensor.int(1, 1)  // FLOAT
    tensor.message(2, shape)
    var type = Message()
    type.message(1, tensor)
    var v = Message()
    v.string(1, name)
    v.message(2, type)
    return v
  }

  /// The model's bytes (opset 17).
  func data(outputDims: [Int?]) -> Data {
    var g = Message()
    for n in nodes { g.message(1, n) }
    g.string(2, "main_graph")
    for i in initializers { g.message(5, i) }
    g.message(11, Self.valueInfo("input", [nil] + inputDims.map { $0 }))
    g.message(12, Self.valueInfo(output, outputDims))
    var opset = Message()
    opset.string(1, "")
    opset.int(2, 17)
    var m = Message()
    m.int(1, 8)
    m.message(7, g)
    m.message(8, opset)
    return Data(m.bytes)
  }

  /// A model whose first node is a 4x4 conv with `filters` filters on a [N, 1, 4, 4] input (so [N, filters, 1, 1]
  /// out), `then` adding the nodes after it (given the conv's output name), flattened at the end unless `then`
  /// ends in a 2-D value.
  static func convModel(filters: Int = 3, convAttributes: [(String, Attribute)] = [], weightDims: [Int]? = nil,
                        external: [(String, String)]? = nil, then: (inout ONNXBuilder, String) -> Void = { _, _ in }) -> Data {
    var b = ONNXBuilder(inputDims: [1, 4, 4])
    let dims = weightDims ?? [filters, 1, 4, 4]
    b.initializer("conv.weight", dims: dims, values: (0..<dims.reduce(1, *)).map { Float($0 % 7) * 0.1 - 0.3 }, external: external)
    b.node("Conv", ["input", "conv.weight"], "c", convAttributes)
    b.node("Flatten", ["c"], "f")
    then(&b, "f")
    return b.data(outputDims: [nil, filters])
  }
}
