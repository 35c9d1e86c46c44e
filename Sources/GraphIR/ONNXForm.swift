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
