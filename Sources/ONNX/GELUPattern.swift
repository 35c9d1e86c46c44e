import GraphIR

/// How far along GELU's exported formula, x * (1 + Erf(x / sqrt 2)) * 0.5, an ONNX value is.
enum GELUStage: Equatable {
  /// x / sqrt 2 (or x * (1 / sqrt 2)).
  case scaled
  case erf
  case erfPlusOne
  /// x * 0.5, when the half comes first.
  case half
  /// x * (1 + erf), awaiting the half.
  case product
}

extension Translator {
  /// The value of a float scalar constant.
  func scalarConstant(_ name: String) -> Float? {
    guard let t = initializers[name], t.dataType == Int32(Onnx_TensorProto.DataType.float.rawValue),
          let v = try? floats(t, Onnx_NodeProto()), v.data.count == 1 else { return nil }
    return v.data[0]
  }

  /// Takes a step of GELU's formula as exporters write it before opset 20 (true): the steps are kept aside and the
  /// last one becomes `gelu`. Other uses of Div, Erf and products or sums with constants are not steps (false).
  mutating func geluStep(_ node: Onnx_NodeProto) throws -> Bool {
    guard node.input.count == 2 || node.opType == "Erf", let first = node.input.first else { return false }
    let pairs = node.input.count == 2 ? [(node.input[0], node.input[1]), (node.input[1], node.input[0])] : []
    func near(_ v: String, _ c: Double) -> Bool { scalarConstant(v).map { abs(Double($0) - c) <= 1e-6 * c } ?? false }
    var step: (x: String, stage: GELUStage)?
    switch node.opType {
    case "Div" where values[first] != nil && near(node.input[1], 2.0.squareRoot()): step = (first, .scaled)
    case "Erf":
      if let p = geluParts[first], p.stage == .scaled { step = (p.x, .erf) }
    case "Add":
      for (a, b) in pairs { if let p = geluParts[a], p.stage == .erf, near(b, 1) { step = (p.x, .erfPlusOne) } }
    case "Mul":
      for (a, b) in pairs {
        if values[a] != nil, near(b, 0.5.squareRoot()) { step = (a, .scaled) }
        if values[a] != nil, near(b, 0.5) { step = (a, .half) }
        guard let p = geluParts[a] else { continue }
        if p.stage == .erfPlusOne, b == p.x { step = (p.x, .product) }
        if (p.stage == .erfPlusOne && geluParts[b].map { $0 == (p.x, .half) } ?? false) || (p.stage == .product && near(b, 0.5)) {
          define(node, layerName(node, weight: nil), "gelu(\(try value(of: p.x, in: node)))")
          return true
        }
      }
    default: break
    }
    guard let step else { return false }
    geluParts[node.output[0]] = step
    return true
  }

  /// The `.graph` value of the ONNX value `name`, which `node` reads.
  func value(of name: String, in node: Onnx_NodeProto) throws -> String {
    guard let v = values[name] else { throw fail(node, "'\(name)' is neither the image nor an earlier node's output") }
    return v
  }
}
