/// How a forward op is written as ONNX: one standard node, or no form and why. The op defines it beside its
/// shape rule and gradient (`ForwardOp.onnx`, with no default, so an op without one does not compile), and
/// `ONNX/Export.swift` derives every node it writes from it.
public enum ONNXForm: Sendable, Equatable {
  /// One node of the standard domain: its op type, its inputs in ONNX's order and its attributes.
  case node(String, inputs: [ONNXInput], attributes: [ONNXAttribute])
  /// Two standard nodes: `first` of the operand, then `second` of the operand and `first`'s output (SiLU, which
  /// ONNX before opset 22 has no op for, is Sigmoid then Mul).
  case gated(first: String, second: String)
  /// Split of the channels into `parts` equal parts (opset 13's Split without sizes), of which the value is the
  /// `index`-th (the others are unused outputs).
  case split(parts: Int, index: Int)
  /// Reshape to [N, groups, C / groups, H, W], Transpose [0, 2, 1, 3, 4], Reshape back: the targets name the
  /// operand's sizes, which the export takes from shape inference.
  case channelShuffle(groups: Int)
  /// GELU before opset 20's Gelu, as exporters write it: Div(x, sqrt 2), Erf, Add 1, Mul by x, Mul by 1/2.
  case erfGELU
  /// No ONNX form (a loss, which the exported inference graph does not hold), and why.
  case none(reason: String)
  /// An int8 conv (`Int8Arithmetic`) in ONNX's QDQ form: operand 0 through QuantizeLinear and DequantizeLinear (u8 with this
  /// quantization), the `weight` parameter as s8 steps through a DequantizeLinear per output channel (axis 0), then
  /// the float node `conv` (a `.node` form) on their outputs.
  indirect case quantized(ONNXForm, input: Quantization)
}

/// An input of an exported node.
public enum ONNXInput: Sendable, Equatable {
  /// The node's operand at this position.
  case operand(Int)
  /// The node's parameter or buffer with this `state_dict` suffix (`weight`, `running_mean`), as an initializer.
  case parameter(String)
  /// An initializer the export makes under the node's name and this suffix: `value` repeated as many times as the
  /// parameter `like` has elements (a batch norm without affine parameters scales by 1 and shifts by 0).
  case filled(String, value: Float, like: String)
  /// A scalar initializer the export makes under the node's name and this suffix (Clip's bounds, inputs since opset 11).
  case scalar(String, value: Float)
}

/// A named attribute of an exported node.
public struct ONNXAttribute: Sendable, Equatable {
  public enum Value: Sendable, Equatable {
    case int(Int), ints([Int]), float(Double)
  }
  public var name: String
  public var value: Value
  public init(_ name: String, _ value: Value) {
    self.name = name
    self.value = value
  }
}

extension PoolAttrs {
  /// The attributes of the pool's ONNX node: the window and stride, then what differs from a plain pool
  /// (an average's `count_include_pad` only where padding makes it matter; ONNX's default is PyTorch's opposite).
  func onnxAttributes(average: Bool) -> [ONNXAttribute] {
    var r = [ONNXAttribute("kernel_shape", .ints([size, size])), ONNXAttribute("strides", .ints([stride, stride]))]
    if padding != 0 { r.append(ONNXAttribute("pads", .ints([padding, padding, padding, padding]))) }
    if ceilMode { r.append(ONNXAttribute("ceil_mode", .int(1))) }
    if average, padding != 0 { r.append(ONNXAttribute("count_include_pad", .int(countIncludePad ? 1 : 0))) }
    return r
  }
}

/// How the import reads a forward op from ONNX: the other half of its `onnx` form, defined beside it
/// (`ForwardOp.onnxReading`, with no default, so an op without one does not compile). `ONNX/Import.swift` derives
/// its table of op types from these and keeps only what exporters write around ops.
public enum ONNXReading: Sendable {
  /// A node of one of these standard op types is this op: `read` gives the op, or an error (from the node's
  /// `fail`) naming what cnnc's op does not take.
  case node([String], read: @Sendable (any ONNXNodeReader) throws -> ONNXRead)
  /// The op is read from a pattern of nodes that exporters write, which the import matches; the text says which.
  case pattern(String)
  /// The import does not read the op, and why.
  case none(reason: String)
}

/// A float tensor of an ONNX model: its dimensions and row-major values.
public typealias ONNXTensor = (shape: [Int], data: [Float])

/// What a node read as an op gives: the op, the node's inputs that are its operands, and its parameters and
/// buffers.
public struct ONNXRead {
  public var op: Op
  /// The node's inputs that are the op's operands, in order.
  public var operands: [Int]
  /// Parameters and buffers by `state_dict` suffix, in cnnc's layout (a Gemm's B transposed where ONNX keeps it
  /// [in, out]).
  public var tensors: [(suffix: String, value: ONNXTensor)]
  /// The input whose initializer name (`PREFIX.weight`) names the layer, if any.
  public var namedBy: Int?
  public init(_ op: Op, operands: [Int] = [0], tensors: [(suffix: String, value: ONNXTensor)] = [], namedBy: Int? = nil) {
    self.op = op
    self.operands = operands
    self.tensors = tensors
    self.namedBy = namedBy
  }
}

/// One ONNX node as a reading sees it; the import implements it over the parsed model.
public protocol ONNXNodeReader {
  var opType: String { get }
  var inputCount: Int { get }
  var outputCount: Int { get }
  /// Whether output `i` is named (an optional output left out has an empty name).
  func hasOutput(_ i: Int) -> Bool
  /// Whether input `i` is present and an activation (neither left out nor a constant).
  func isActivation(_ i: Int) -> Bool
  /// Input `i` as a float32 constant, nil when it is left out; an error when it is present but not a constant.
  func constant(_ i: Int) throws -> ONNXTensor?
  func int(_ key: String) -> Int?
  func ints(_ key: String) -> [Int]?
  func float(_ key: String) -> Float?
  func string(_ key: String) -> String?
  /// An error naming the model, the node and its op type, then `message`.
  func fail(_ message: String) -> any Error
}

extension ONNXNodeReader {
  /// One value for a 2-D attribute that cnnc's square windows need equal on both axes (and, for pads, on both
  /// sides).
  public func square(_ key: String, default d: Int) throws -> Int {
    guard let v = ints(key), !v.isEmpty else { return d }
    guard Set(v).count == 1 else { throw fail("\(key) \(v) differ by axis or side; cnnc's convolutions and pools are square and symmetric") }
    return v[0]
  }

  /// A float attribute (or `d` when absent) that must be finite and satisfy `ok`, else an error naming the
  /// attribute, its value and `rule`.
  public func finite(_ key: String, default d: Float, _ rule: String = "finite", _ ok: (Float) -> Bool = { _ in true }) throws -> Float {
    let v = float(key) ?? d
    guard v.isFinite, ok(v) else { throw fail("attribute '\(key)' is \(v); it must be \(rule)") }
    return v
  }

  /// Input `i`, which must be a constant of rank `rank`, else an error saying what it must be.
  public func constant(_ i: Int, rank: Int, _ what: String) throws -> ONNXTensor {
    guard let t = try constant(i), t.shape.count == rank else { throw fail(what) }
    return t
  }

  /// Refuses `auto_pad` (padding computed from the output size), which cnnc's explicit padding does not take.
  public func explicitPadding() throws {
    guard ["NOTSET", ""].contains(string("auto_pad") ?? "NOTSET") else { throw fail("auto_pad \(string("auto_pad")!): give explicit pads") }
  }
}

/// A row-major [rows, columns] matrix transposed (ONNX's MatMul and Gemm without transB keep [in, out]; cnnc's
/// dense weight is [out, in]).
public func transposedMatrix(_ t: ONNXTensor) -> ONNXTensor {
  let (r, c) = (t.shape[0], t.shape[1])
  var out = [Float](repeating: 0, count: r * c)
  for i in 0..<r { for j in 0..<c { out[j * r + i] = t.data[i * c + j] } }
  return ([c, r], out)
}

extension PoolAttrs {
  /// The pool a MaxPool or AveragePool node is: square windows, at most half a window of padding (PyTorch's
  /// rule), no dilation or indices output.
  static func read(_ n: any ONNXNodeReader, average: Bool) throws -> PoolAttrs {
    let size = try n.square("kernel_shape", default: 0), stride = try n.square("strides", default: 1)
    let padding = try n.square("pads", default: 0), ceilMode = (n.int("ceil_mode") ?? 0) != 0
    guard size > 0 else { throw n.fail("attribute 'kernel_shape' is missing or not positive") }
    guard stride >= 1 else { throw n.fail("attribute 'strides' is \(stride); strides must be at least 1") }
    guard padding >= 0, padding <= size / 2 else {
      throw n.fail("attribute 'pads' is \(padding); cnnc pads a pool by at most half its window (\(size / 2)), as PyTorch does")
    }
    try n.explicitPadding()
    guard try n.square("dilations", default: 1) == 1 else { throw n.fail("dilated pooling is not supported") }
    guard (n.int("storage_order") ?? 0) == 0, n.outputCount == 1 || !n.hasOutput(1) else { throw n.fail("the indices output of MaxPool is not supported") }
    // ONNX's AveragePool leaves padding out of the average by default; PyTorch's (and cnnc's) counts it.
    let countIncludePad = !(average && padding != 0 && (n.int("count_include_pad") ?? 0) == 0)
    return PoolAttrs(size: size, stride: stride, padding: padding, ceilMode: ceilMode, countIncludePad: countIncludePad)
  }
}
