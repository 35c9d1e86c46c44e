/// The spelling of ops and attributes: the only place, with the parser and printer, where they are strings.

/// An attribute value as written in the source.
public enum AttrValue: Equatable, Sendable {
  case int(Int)
  case float(Double)
  case bool(Bool)
  /// A bare name (an activation's spelling).
  case name(String)
}

/// An attribute the op accepts, and whether it must be given.
public struct AttrSpec: Sendable {
  public enum Kind: String, Sendable { case int = "an integer", float = "a number", bool = "true or false", name = "a name" }
  public var name: String
  public var kind: Kind
  public var required: Bool
  public init(_ name: String, _ kind: Kind, required: Bool = false) {
    self.name = name
    self.kind = kind
    self.required = required
  }
}

/// A rejected attribute value: which attribute, and why.
public struct AttrError: Error {
  public var attribute: String
  public var message: String
}

/// How one op is written: its name, operand names, attributes, and the typed op they build.
public struct OpSyntax: Sendable {
  public var name: String
  public var operands: [String]
  public var attrs: [AttrSpec]
  public var make: @Sendable (Attributes) throws(AttrError) -> Op
  public init(_ name: String, operands: [String], attrs: [AttrSpec] = [],
              make: @escaping @Sendable (Attributes) throws(AttrError) -> Op) {
    self.name = name
    self.operands = operands
    self.attrs = attrs
    self.make = make
  }

  static let all: [OpSyntax] = Op.definitions.map { $0.syntax }
  static let byName: [String: OpSyntax] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })
  static let forwardNames = Op.definitions.filter { $0 is any ForwardOp.Type }.map { $0.syntax.name }
}

/// The attribute values of one statement, read with the ranges the spec allows.
public struct Attributes: Sendable {
  var values: [String: AttrValue]
  /// The number of operands written (what a variadic op such as `concat` takes).
  var operandCount: Int
  init(_ values: [String: AttrValue], operandCount: Int = 0) {
    self.values = values
    self.operandCount = operandCount
  }

  /// The operand count of a variadic op, which must be at least `minimum` (else the parser reports the
  /// syntax's operands).
  public func variadicCount(minimum: Int = 2) throws(AttrError) -> Int {
    guard operandCount >= minimum else { throw AttrError(attribute: "", message: "takes at least \(minimum) operands, got \(operandCount)") }
    return operandCount
  }

  /// An integer attribute of at least `min`; `default` (or 0 for a required one the parser already reported).
  public func int(_ name: String, min: Int, default d: Int? = nil) throws(AttrError) -> Int {
    guard case .int(let v)? = values[name] else { return d ?? 0 }
    guard v >= min else {
      throw AttrError(attribute: name, message: "'\(name)' must be \(min == 0 ? "non-negative" : "at least \(min)"), got \(v)")
    }
    return v
  }

  /// A name attribute, or nil when absent.
  public func name(_ name: String) -> String? {
    if case .name(let v)? = values[name] { return v }
    return nil
  }

  /// A boolean attribute, true by default.
  public func bool(_ name: String) -> Bool {
    if case .bool(let v)? = values[name] { return v }
    return true
  }

  /// A boolean attribute, false by default.
  public func flag(_ name: String) -> Bool {
    if case .bool(let v)? = values[name] { return v }
    return false
  }

  /// A number attribute in `range`, or `default` when absent.
  public func float(_ name: String, in range: some RangeExpression<Double>, default d: Double, rule: String) throws(AttrError) -> Double {
    guard case .float(let v)? = values[name] else { return d }
    guard range.contains(v) else { throw AttrError(attribute: name, message: "'\(name)' must satisfy \(rule), got \(formatFloat(v))") }
    return v
  }

  /// A number attribute, or `default` when absent (the parser refuses literals out of Double's range).
  public func number(_ name: String, default d: Double) -> Double {
    if case .float(let v)? = values[name] { return v }
    return d
  }
}

// MARK: Attributes shared by several ops

extension Conv2DAttrs {
  static let syntax = [
    AttrSpec("filters", .int, required: true), AttrSpec("kernel", .int, required: true),
    AttrSpec("stride", .int), AttrSpec("padding", .int), AttrSpec("bias", .bool), AttrSpec("groups", .int), AttrSpec("dilation", .int),
    AttrSpec("scaled", .bool), AttrSpec("input_scale", .float), AttrSpec("input_zero_point", .int), AttrSpec("weight_steps", .int),
  ]
  init(_ a: Attributes) throws(AttrError) {
    self.init(filters: try a.int("filters", min: 1), kernel: try a.int("kernel", min: 1),
              stride: try a.int("stride", min: 1, default: 1), padding: try a.int("padding", min: 0, default: 0),
              bias: a.bool("bias"), groups: try a.int("groups", min: 1, default: 1), dilation: try a.int("dilation", min: 1, default: 1),
              scaled: a.flag("scaled"), quantization: try Self.quantization(a))
    guard filters % groups == 0 else {
      throw AttrError(attribute: "groups", message: "'groups' must divide 'filters' (\(filters)), got \(groups)")
    }
    if quantization != nil, isDirect {
      throw AttrError(attribute: "input_scale", message: "an int8 conv ('input_scale') must have one group and no dilation")
    }
  }
  /// `input_scale` and `input_zero_point`, both or neither (the zero point 0 when omitted): a positive normal f32
  /// step and a u8 zero point; `weight_steps`, the largest weight step (127 when omitted; 64 is the reduced range).
  /// A conv's or a dense layer's.
  static func quantization(_ a: Attributes) throws(AttrError) -> Quantization? {
    guard case .float(let scale)? = a.values["input_scale"] else {
      for name in ["input_zero_point", "weight_steps"] where a.values[name] != nil {
        throw AttrError(attribute: name, message: "'\(name)' needs 'input_scale'")
      }
      return nil
    }
    guard scale > 0, Float(scale).isNormal, Float(scale).isFinite else {
      throw AttrError(attribute: "input_scale", message: "'input_scale' must be a positive, normal f32, got \(formatFloat(scale))")
    }
    let zero = try a.int("input_zero_point", min: 0, default: 0)
    guard zero <= Int(Int8Arithmetic.activationSteps) else {
      throw AttrError(attribute: "input_zero_point", message: "'input_zero_point' must be at most \(Int(Int8Arithmetic.activationSteps)), got \(zero)")
    }
    let full = Int(Int8Arithmetic.fullWeightSteps)
    let steps = try a.int("weight_steps", min: 1, default: full)
    guard steps <= full else {
      throw AttrError(attribute: "weight_steps", message: "'weight_steps' must be at most \(full) (s8 weights are symmetric), got \(steps)")
    }
    return Quantization(scale: Float(scale), zeroPoint: zero, weightSteps: steps)
  }
  var printed: [(String, String)] {
    var r = [("filters", "\(filters)"), ("kernel", "\(kernel)")]
    if stride != 1 { r.append(("stride", "\(stride)")) }
    if padding != 0 { r.append(("padding", "\(padding)")) }
    if !bias { r.append(("bias", "false")) }
    if groups != 1 { r.append(("groups", "\(groups)")) }
    if dilation != 1 { r.append(("dilation", "\(dilation)")) }
    if scaled { r.append(("scaled", "true")) }
    r += quantization?.printed ?? []
    return r
  }
  /// The operands of a forward conv: the input, then the folded batch norm's scale and shift when scaled.
  var operandNames: [String] { scaled ? ["x", "scale"] : ["x"] }
}

extension PoolAttrs {
  /// The attributes of `maxpool` and its gradient.
  static let syntax = plainSyntax + [AttrSpec("padding", .int), AttrSpec("ceil_mode", .bool)]
  /// The attributes of a pool whose windows lie inside the input (the fused ops').
  static let plainSyntax = [AttrSpec("size", .int, required: true), AttrSpec("stride", .int)]
  /// The attributes of `avgpool` and its gradient: also whether padding counts in the average.
  static let averageSyntax = syntax + [AttrSpec("count_include_pad", .bool)]
  init(_ a: Attributes) throws(AttrError) {
    let size = try a.int("size", min: 1)
    self.init(size: size, stride: try a.int("stride", min: 1, default: size), padding: try a.int("padding", min: 0, default: 0),
              ceilMode: a.flag("ceil_mode"), countIncludePad: a.bool("count_include_pad"))
    guard padding <= size / 2 else {
      throw AttrError(attribute: "padding", message: "'padding' must be at most half the window (\(size / 2)), got \(padding)")
    }
  }
  var printed: [(String, String)] {
    var r = [("size", "\(size)")]
    if stride != size { r.append(("stride", "\(stride)")) }
    if padding != 0 { r.append(("padding", "\(padding)")) }
    if ceilMode { r.append(("ceil_mode", "true")) }
    if !countIncludePad { r.append(("count_include_pad", "false")) }
    return r
  }
}

extension DenseAttrs {
  static let syntax = [AttrSpec("units", .int, required: true), AttrSpec("bias", .bool), AttrSpec("scaled", .bool),
                        AttrSpec("input_scale", .float), AttrSpec("input_zero_point", .int), AttrSpec("weight_steps", .int)]
  init(_ a: Attributes) throws(AttrError) {
    self.init(units: try a.int("units", min: 1), bias: a.bool("bias"), scaled: a.flag("scaled"), quantization: try Conv2DAttrs.quantization(a))
  }
  var printed: [(String, String)] {
    [("units", "\(units)")] + (bias ? [] : [("bias", "false")]) + (scaled ? [("scaled", "true")] : []) + (quantization?.printed ?? [])
  }
  /// The operands of a forward dense layer: the input, then the folded batch norm's scale and shift when scaled.
  var operandNames: [String] { scaled ? ["x", "scale"] : ["x"] }
}

extension DropoutAttrs {
  static let syntax = [AttrSpec("rate", .float, required: true)]
  init(_ a: Attributes) throws(AttrError) { self.init(rate: try a.float("rate", in: 0..<1, default: 0, rule: "0 <= rate < 1")) }
  var printed: [(String, String)] { [("rate", formatFloat(rate))] }
}

extension UnpoolAttrs {
  static let syntax = PoolAttrs.plainSyntax + [AttrSpec("height", .int, required: true), AttrSpec("width", .int, required: true)]
  init(_ a: Attributes) throws(AttrError) {
    self.init(pool: try PoolAttrs(a), height: try a.int("height", min: 1), width: try a.int("width", min: 1))
  }
  var printed: [(String, String)] { pool.printed + [("height", "\(height)"), ("width", "\(width)")] }
}

extension Quantization {
  /// `input_scale` (the f32 as a double, which reads back to the same bits), `input_zero_point`, and
  /// `weight_steps` when not the full range.
  var printed: [(String, String)] {
    [("input_scale", formatFloat(Double(scale))), ("input_zero_point", "\(zeroPoint)")]
      + (weightSteps == Int(Int8Arithmetic.fullWeightSteps) ? [] : [("weight_steps", "\(weightSteps)")])
  }
}

/// Shortest text for a float that the `.graph` float grammar accepts (always with a '.').
public func formatFloat(_ v: Double) -> String {
  var s = "\(v)"
  if !s.contains(".") {
    if let e = s.firstIndex(where: { $0 == "e" || $0 == "E" }) {
      s.insert(contentsOf: ".0", at: e)
    } else {
      s += ".0"
    }
  }
  return s
}
