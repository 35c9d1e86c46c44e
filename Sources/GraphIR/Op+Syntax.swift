/// The spelling of ops and attributes: the only place, with the parser and printer, where they are strings.

/// An attribute value as written in the source.
enum AttrValue: Equatable, Sendable {
  case int(Int)
  case float(Double)
  case bool(Bool)
}

/// An attribute the op accepts, and whether it must be given.
struct AttrSpec: Sendable {
  enum Kind: String, Sendable { case int = "an integer", float = "a number", bool = "true or false" }
  var name: String
  var kind: Kind
  var required: Bool
}

/// A rejected attribute value: which attribute, and why.
struct AttrError: Error {
  var attribute: String
  var message: String
}

/// How one op is written: its name, operand count, attributes, and the typed op they build.
struct OpSyntax: Sendable {
  var name: String
  var operands: [String]
  var attrs: [AttrSpec]
  var make: @Sendable ([String: AttrValue]) throws(AttrError) -> Op

  static let all: [OpSyntax] = forward + backward + fused
  static let byName: [String: OpSyntax] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })
  static let forwardNames = forward.map(\.name)

  private static let convAttrs = [
    AttrSpec(name: "filters", kind: .int, required: true), AttrSpec(name: "kernel", kind: .int, required: true),
    AttrSpec(name: "stride", kind: .int, required: false), AttrSpec(name: "padding", kind: .int, required: false),
    AttrSpec(name: "bias", kind: .bool, required: false),
  ]
  private static let poolAttrs = [
    AttrSpec(name: "size", kind: .int, required: true), AttrSpec(name: "stride", kind: .int, required: false),
  ]
  private static let denseAttrs = [
    AttrSpec(name: "units", kind: .int, required: true), AttrSpec(name: "bias", kind: .bool, required: false),
  ]
  private static let rateAttrs = [AttrSpec(name: "rate", kind: .float, required: true)]

  private static let forward: [OpSyntax] = [
    OpSyntax(name: "conv2d", operands: ["x"], attrs: convAttrs) { a throws(AttrError) in .conv2d(try conv(a)) },
    OpSyntax(name: "relu", operands: ["x"], attrs: []) { _ in .relu },
    OpSyntax(name: "maxpool", operands: ["x"], attrs: poolAttrs) { a throws(AttrError) in .maxPool(try pool(a)) },
    OpSyntax(name: "avgpool", operands: ["x"], attrs: poolAttrs) { a throws(AttrError) in .avgPool(try pool(a)) },
    OpSyntax(name: "flatten", operands: ["x"], attrs: []) { _ in .flatten },
    OpSyntax(name: "dense", operands: ["x"], attrs: denseAttrs) { a throws(AttrError) in .dense(try dense(a)) },
    OpSyntax(name: "dropout", operands: ["x"], attrs: rateAttrs) { a throws(AttrError) in .dropout(try dropout(a)) },
    OpSyntax(name: "softmax", operands: ["x"], attrs: []) { _ in .softmax },
    OpSyntax(name: "cross_entropy", operands: ["logits", "labels"], attrs: []) { _ in .crossEntropy },
    // A forward op (the residual join) that `differentiate` also uses to sum gradients.
    OpSyntax(name: "add", operands: ["a", "b"], attrs: []) { _ in .add },
  ]

  private static let backward: [OpSyntax] = [
    OpSyntax(name: "conv2d_grad_input", operands: ["dy", "weight", "x"], attrs: convAttrs) { a throws(AttrError) in .conv2dGradInput(try conv(a)) },
    OpSyntax(name: "conv2d_grad_weight", operands: ["dy", "x"], attrs: convAttrs) { a throws(AttrError) in .conv2dGradWeight(try conv(a)) },
    OpSyntax(name: "conv2d_grad_bias", operands: ["dy"], attrs: []) { _ in .conv2dGradBias },
    OpSyntax(name: "relu_grad", operands: ["dy", "y"], attrs: []) { _ in .reluGrad },
    OpSyntax(name: "maxpool_grad", operands: ["dy", "x"], attrs: poolAttrs) { a throws(AttrError) in .maxPoolGrad(try pool(a)) },
    OpSyntax(name: "avgpool_grad", operands: ["dy", "x"], attrs: poolAttrs) { a throws(AttrError) in .avgPoolGrad(try pool(a)) },
    OpSyntax(name: "flatten_grad", operands: ["dy", "x"], attrs: []) { _ in .flattenGrad },
    OpSyntax(name: "dense_grad_input", operands: ["dy", "weight"], attrs: []) { _ in .denseGradInput },
    OpSyntax(name: "dense_grad_weight", operands: ["dy", "x"], attrs: []) { _ in .denseGradWeight },
    OpSyntax(name: "dense_grad_bias", operands: ["dy"], attrs: []) { _ in .denseGradBias },
    OpSyntax(name: "dropout_grad", operands: ["dy", "y"], attrs: rateAttrs) { a throws(AttrError) in .dropoutGrad(try dropout(a)) },
    OpSyntax(name: "softmax_grad", operands: ["dy", "y"], attrs: []) { _ in .softmaxGrad },
    OpSyntax(name: "cross_entropy_grad", operands: ["logits", "labels"], attrs: []) { _ in .crossEntropyGrad },
  ]

  private static let fused: [OpSyntax] = [
    OpSyntax(name: "conv2d_relu", operands: ["x"], attrs: convAttrs) { a throws(AttrError) in .conv2dReLU(try conv(a)) },
    OpSyntax(name: "conv2d_relu_maxpool", operands: ["x"], attrs: convAttrs + [
      AttrSpec(name: "pool_size", kind: .int, required: true), AttrSpec(name: "pool_stride", kind: .int, required: false),
    ]) { a throws(AttrError) in
      let size = try int(a, "pool_size", min: 1)
      return .conv2dReLUMaxPool(try conv(a), PoolAttrs(size: size, stride: try int(a, "pool_stride", min: 1, default: size)))
    },
    OpSyntax(name: "dense_relu", operands: ["x"], attrs: denseAttrs) { a throws(AttrError) in .denseReLU(try dense(a)) },
    OpSyntax(name: "relu_maxpool_grad", operands: ["dy", "y", "argmax"], attrs: poolAttrs + [
      AttrSpec(name: "height", kind: .int, required: true), AttrSpec(name: "width", kind: .int, required: true),
    ]) { a throws(AttrError) in
      .reluMaxPoolGrad(UnpoolAttrs(pool: try pool(a), height: try int(a, "height", min: 1), width: try int(a, "width", min: 1)))
    },
  ]

  // MARK: Attribute validation (the ranges the spec allows)

  private static func int(_ a: [String: AttrValue], _ name: String, min: Int, default d: Int? = nil) throws(AttrError) -> Int {
    guard case .int(let v)? = a[name] else { return d ?? 0 }
    guard v >= min else {
      throw AttrError(attribute: name, message: "'\(name)' must be \(min == 0 ? "non-negative" : "at least \(min)"), got \(v)")
    }
    return v
  }
  private static func bool(_ a: [String: AttrValue], _ name: String) -> Bool {
    if case .bool(let v)? = a[name] { return v }
    return true
  }
  private static func conv(_ a: [String: AttrValue]) throws(AttrError) -> Conv2DAttrs {
    Conv2DAttrs(filters: try int(a, "filters", min: 1), kernel: try int(a, "kernel", min: 1),
                stride: try int(a, "stride", min: 1, default: 1), padding: try int(a, "padding", min: 0, default: 0),
                bias: bool(a, "bias"))
  }
  private static func pool(_ a: [String: AttrValue]) throws(AttrError) -> PoolAttrs {
    let size = try int(a, "size", min: 1)
    return PoolAttrs(size: size, stride: try int(a, "stride", min: 1, default: size))
  }
  private static func dense(_ a: [String: AttrValue]) throws(AttrError) -> DenseAttrs {
    DenseAttrs(units: try int(a, "units", min: 1), bias: bool(a, "bias"))
  }
  private static func dropout(_ a: [String: AttrValue]) throws(AttrError) -> DropoutAttrs {
    guard case .float(let r)? = a["rate"] else { return DropoutAttrs(rate: 0) }
    guard r >= 0 && r < 1 else { throw AttrError(attribute: "rate", message: "'rate' must satisfy 0 <= rate < 1, got \(formatFloat(r))") }
    return DropoutAttrs(rate: r)
  }
}

extension Op {
  /// The op's name as written in `.graph` files.
  public var spelling: String {
    switch self {
    case .conv2d: "conv2d"
    case .relu: "relu"
    case .maxPool: "maxpool"
    case .avgPool: "avgpool"
    case .flatten: "flatten"
    case .dense: "dense"
    case .dropout: "dropout"
    case .softmax: "softmax"
    case .crossEntropy: "cross_entropy"
    case .conv2dGradInput: "conv2d_grad_input"
    case .conv2dGradWeight: "conv2d_grad_weight"
    case .conv2dGradBias: "conv2d_grad_bias"
    case .reluGrad: "relu_grad"
    case .maxPoolGrad: "maxpool_grad"
    case .avgPoolGrad: "avgpool_grad"
    case .flattenGrad: "flatten_grad"
    case .denseGradInput: "dense_grad_input"
    case .denseGradWeight: "dense_grad_weight"
    case .denseGradBias: "dense_grad_bias"
    case .dropoutGrad: "dropout_grad"
    case .softmaxGrad: "softmax_grad"
    case .crossEntropyGrad: "cross_entropy_grad"
    case .add: "add"
    case .conv2dReLU: "conv2d_relu"
    case .conv2dReLUMaxPool: "conv2d_relu_maxpool"
    case .denseReLU: "dense_relu"
    case .reluMaxPoolGrad: "relu_maxpool_grad"
    }
  }

  /// Attributes in canonical order, omitting those at their default.
  var printedAttributes: [(String, String)] {
    switch self {
    case .conv2dReLUMaxPool(let a, let p):
      var r = Op.conv2d(a).printedAttributes + [("pool_size", "\(p.size)")]
      if p.stride != p.size { r.append(("pool_stride", "\(p.stride)")) }
      return r
    case .reluMaxPoolGrad(let a):
      return Op.maxPool(a.pool).printedAttributes + [("height", "\(a.height)"), ("width", "\(a.width)")]
    case .conv2d(let a), .conv2dGradInput(let a), .conv2dGradWeight(let a), .conv2dReLU(let a):
      var r = [("filters", "\(a.filters)"), ("kernel", "\(a.kernel)")]
      if a.stride != 1 { r.append(("stride", "\(a.stride)")) }
      if a.padding != 0 { r.append(("padding", "\(a.padding)")) }
      if !a.bias { r.append(("bias", "false")) }
      return r
    case .maxPool(let a), .avgPool(let a), .maxPoolGrad(let a), .avgPoolGrad(let a):
      return a.stride == a.size ? [("size", "\(a.size)")] : [("size", "\(a.size)"), ("stride", "\(a.stride)")]
    case .dense(let a), .denseReLU(let a):
      return a.bias ? [("units", "\(a.units)")] : [("units", "\(a.units)"), ("bias", "false")]
    case .dropout(let a), .dropoutGrad(let a):
      return [("rate", formatFloat(a.rate))]
    default:
      return []
    }
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
