import Foundation
import GraphIR

/// ONNX's QDQ form (QuantizeLinear and DequantizeLinear around float ops, as cnnc's export and ONNX Runtime's
/// `quantize_static` write it) read into int8 convs:
/// - a DequantizeLinear of an initializer (int8, uint8 or int32, per tensor or along an axis) is folded into a
///   float initializer: a quantized weight or bias read as the float values it stands for;
/// - a QuantizeLinear of an activation followed by a DequantizeLinear with the same scale and zero point is a
///   clip to the range the steps cover (what the pair does besides rounding: an exporter that drops a relu before
///   it relies on that), and a conv of one group that reads it gets that quantization (`input_scale`);
/// - weights come back to `Int8Arithmetic`'s steps when the program is built, exactly where they were symmetric
///   with the largest at 127 (as both writers make them), or at 64 (the reduced range: an int8 weight whose steps
///   all lie within ±64 gives its conv `weight_steps: 64`).
extension Translator {
  /// Folds a DequantizeLinear of an initializer into a float initializer (true), or records a QuantizeLinear of
  /// an activation, or reads a DequantizeLinear that completes one (true); false for anything else.
  mutating func quantizeDequantize(_ node: Onnx_NodeProto) throws -> Bool {
    switch node.opType {
    case "DequantizeLinear" where initializers[node.input[0]] != nil:
      let (tensor, largest) = try dequantized(node)
      initializers[node.output[0]] = tensor
      largestSteps[node.output[0]] = largest
      return true
    case "QuantizeLinear":
      let (scale, zero, unsigned) = try quantizationParameters(node)
      quantized[node.output[0]] = (input: try operand(node, 0), scale: scale, zero: zero, unsigned: unsigned)
      return true
    case "DequantizeLinear":
      guard let q = quantized[node.input[0]] else {
        throw fail(node, "input 1 ('\(node.input[0])') is neither an initializer nor a QuantizeLinear's output")
      }
      let (scale, zero, unsigned) = try quantizationParameters(node)
      guard scale == q.scale, zero == q.zero, unsigned == q.unsigned else {
        throw fail(node, "its scale and zero point differ from the QuantizeLinear before it; cnnc reads a quantize-dequantize pair as one quantization")
      }
      // Steps of an int8 activation are u8 steps less 128.
      let q8 = Quantization(scale: scale, zeroPoint: zero + (unsigned ? 0 : 128))
      let low = Float(0 - q8.zeroPoint) * scale, high = Float(Int(Int8Arithmetic.activationSteps) - q8.zeroPoint) * scale
      define(node, layerName(node, weight: nil), "clip(\(q.input), min: \(formatFloat(Double(low))), max: \(formatFloat(Double(high))))")
      fakeQuantized[node.output[0]] = q8
      return true
    default:
      return false
    }
  }

  /// The scalar scale and zero point of a QuantizeLinear or DequantizeLinear of an activation, and whether the
  /// steps are unsigned (u8; int8 otherwise).
  func quantizationParameters(_ node: Onnx_NodeProto) throws -> (scale: Float, zero: Int, unsigned: Bool) {
    guard node.input.count >= 2, let s = initializers[node.input[1]] else { throw fail(node, "the scale must be an initializer") }
    let scale = try floats(s, node)
    guard scale.data.count == 1, scale.data[0] > 0, scale.data[0].isNormal else {
      throw fail(node, "an activation's scale must be one positive, normal float; got \(scale.data.prefix(4))")
    }
    guard node.input.count > 2, !node.input[2].isEmpty else { return (scale.data[0], 0, true) }
    guard let z = initializers[node.input[2]] else { throw fail(node, "the zero point must be an initializer") }
    let zero = try integers(z, node)
    guard zero.values.count == 1 else { throw fail(node, "an activation's zero point must be one value") }
    return (scale.data[0], zero.values[0], zero.type == .uint8)
  }

  /// A DequantizeLinear of an initializer as the float initializer it computes: (q - zero point) x scale, per tensor
  /// or along `axis`; and the largest |q - zero point|.
  func dequantized(_ node: Onnx_NodeProto) throws -> (Onnx_TensorProto, Int) {
    let q = try integers(initializers[node.input[0]]!, node)
    guard node.input.count >= 2, let s = initializers[node.input[1]] else { throw fail(node, "the scale must be an initializer") }
    let scale = try floats(s, node).data
    let zero = node.input.count > 2 && !node.input[2].isEmpty
      ? try initializers[node.input[2]].map { try integers($0, node).values } ?? { throw fail(node, "the zero point must be an initializer") }()
      : Array(repeating: 0, count: scale.count)
    guard zero.count == scale.count, !scale.isEmpty else { throw fail(node, "the scale and zero point differ in length") }
    let axis = int(node, "axis").map { $0 < 0 ? $0 + q.shape.count : $0 } ?? 1
    // Elements per step of the axis, and the axis's length (1 and the whole tensor for one scale).
    var inner = 1, length = 1
    if scale.count > 1 {
      guard (0..<q.shape.count).contains(axis), q.shape[axis] == scale.count else {
        throw fail(node, "\(scale.count) scales for axis \(axis) of shape \(q.shape)")
      }
      inner = q.shape[(axis + 1)...].reduce(1, *)
      length = scale.count
    }
    let data = q.values.enumerated().map { i, v in
      let c = (i / inner) % length
      return Float(v - zero[c]) * scale[c]
    }
    var t = Onnx_TensorProto()
    t.name = node.output[0]
    t.dims = q.shape.map { Int64($0) }
    t.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
    t.floatData = data
    let largest = q.values.enumerated().reduce(0) { m, e in Swift.max(m, abs(e.1 - zero[(e.0 / inner) % length])) }
    return (t, largest)
  }

  /// The values of an int8, uint8 or int32 tensor, from its raw bytes or its int32 field.
  func integers(_ t: Onnx_TensorProto, _ node: Onnx_NodeProto) throws -> (shape: [Int], values: [Int], type: Onnx_TensorProto.DataType) {
    let shape = t.dims.map { Int($0) }
    guard shape.allSatisfy({ $0 >= 0 }), let count = shape.reduce(Int?(1), { a, d in a.flatMap { $0.multipliedReportingOverflow(by: d).overflow ? nil : $0 * d } }),
          count <= ONNXImport.maxFileBytes else { throw fail(node, "'\(t.name)' has an absurd shape \(shape)") }
    guard let type = Onnx_TensorProto.DataType(rawValue: Int(t.dataType)), [.int8, .uint8, .int32].contains(type) else {
      throw fail(node, "'\(t.name)' is not int8, uint8 or int32")
    }
    let width = type == .int32 ? 4 : 1
    let raw = t.dataLocation == .external ? Data(try externalBytes(t, node)) : t.rawData
    let values: [Int]
    if !raw.isEmpty || t.dataLocation == .external {
      guard raw.count == width * count else { throw fail(node, "'\(t.name)' holds \(raw.count) bytes for \(count) values") }
      values = raw.withUnsafeBytes { raw in
        (0..<count).map { i in
          switch type {
          case .int8: Int(Int8(bitPattern: raw[i]))
          case .uint8: Int(raw[i])
          default: Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
          }
        }
      }
    } else {
      guard t.int32Data.count == count else { throw fail(node, "'\(t.name)' holds \(t.int32Data.count) values for shape \(shape)") }
      values = t.int32Data.map { Int($0) }
    }
    return (shape, values, type)
  }
}
