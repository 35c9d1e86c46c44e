import GraphIR

/// An integer an ONNX graph computes from its tensors' shapes, kept symbolic at import: `x.chunk(2, 1)` exported by
/// the TorchScript exporter slices channels at `(Shape(x)[1] + 1) / 2 * k`, which is known only as a function of
/// the channel count.
indirect enum ShapeExpr: Equatable {
  case constant(Int)
  /// Dimension `axis` of the ONNX value `value`.
  case dim(value: String, axis: Int)
  case add(ShapeExpr, ShapeExpr)
  case sub(ShapeExpr, ShapeExpr)
  case mul(ShapeExpr, ShapeExpr)
  /// ONNX's integer Div (truncating).
  case div(ShapeExpr, ShapeExpr)

  /// The value, given the dimensions `dim` knows; nil where one is unknown or a division is by zero.
  func evaluate(_ dim: (String, Int) -> Int?) -> Int? {
    func both(_ a: ShapeExpr, _ b: ShapeExpr) -> (Int, Int)? {
      guard let x = a.evaluate(dim), let y = b.evaluate(dim) else { return nil }
      return (x, y)
    }
    switch self {
    case .constant(let c): return c
    case .dim(let v, let axis): return dim(v, axis)
    case .add(let a, let b): return both(a, b).flatMap { $0.addingReportingOverflow($1).overflow ? nil : $0 + $1 }
    case .sub(let a, let b): return both(a, b).flatMap { $0.subtractingReportingOverflow($1).overflow ? nil : $0 - $1 }
    case .mul(let a, let b): return both(a, b).flatMap { $0.multipliedReportingOverflow(by: $1).overflow ? nil : $0 * $1 }
    case .div(let a, let b): return both(a, b).flatMap { $1 == 0 ? nil : $0 / $1 }
    }
  }

  /// The value where it depends on no dimension.
  var constant: Int? { evaluate { _, _ in nil } }
}

/// A shape-valued ONNX tensor (int64, rank 0 or 1): its elements, or the whole shape of an activation whose rank
/// the import does not track.
enum ShapeValue {
  case elements([ShapeExpr])
  case shape(of: String)
}

extension Translator {
  /// ONNX ops that compute on shapes (`x.view(x.size(0), -1)` exports Shape, Gather, Unsqueeze, Concat, Reshape).
  static let shapeOps: Set = ["Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "Add", "Sub", "Mul", "Div"]

  /// The shape value an ONNX input holds: one computed from shapes, or an integer constant.
  func shapeValue(_ name: String) -> ShapeValue? {
    if let v = shapeValues[name] { return v }
    guard let t = initializers[name] else { return nil }
    switch t.dataType {
    case Int32(Onnx_TensorProto.DataType.int64.rawValue): return .elements(int64s(t).map(ShapeExpr.constant))
    case Int32(Onnx_TensorProto.DataType.int32.rawValue):
      let values = t.int32Data.isEmpty
        ? t.rawData.withUnsafeBytes { raw in (0..<(raw.count / 4)).map { Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) } }
        : t.int32Data.map { Int($0) }
      return .elements(values.map(ShapeExpr.constant))
    default: return nil
    }
  }

  /// The elements of a shape value, where they are known one by one.
  func elements(_ name: String) -> [ShapeExpr]? {
    if case .elements(let e)? = shapeValue(name) { return e }
    return nil
  }

  /// Takes a node of a shape computation (true): its value is kept symbolic, for a Reshape's target or a Slice's
  /// bounds. A node that computes on activations is not one (false); a shape op of an activation's values is refused.
  mutating func computesShapes(_ node: Onnx_NodeProto) throws -> Bool {
    guard Translator.shapeOps.contains(node.opType) else {
      if node.opType != "Reshape", let v = node.input.first(where: { shapeValues[$0] != nil }) {
        throw fail(node, "reads the computed shape '\(v)'; cnnc takes computed shapes as a Reshape's target or a Slice's bounds")
      }
      return false
    }
    let inputs = node.input.filter { !$0.isEmpty }
    if node.opType == "Shape" {
      guard let x = inputs.first, values[x] != nil else { return false }
      guard int(node, "start") == nil, int(node, "end") == nil else { throw fail(node, "a Shape with start or end is not supported") }
      shapeValues[node.output[0]] = .shape(of: x)
      return true
    }
    // A shape computation reads shapes and integer constants only; anything else is an op on activations.
    guard !inputs.isEmpty, inputs.allSatisfy({ shapeValue($0) != nil }) else { return false }
    shapeValues[node.output[0]] = try evaluateShapeOp(node)
    return true
  }

  /// The value of one shape op on shape values.
  func evaluateShapeOp(_ node: Onnx_NodeProto) throws -> ShapeValue {
    let first = shapeValue(node.input[0])!
    switch node.opType {
    case "Cast", "Squeeze", "Unsqueeze": return first
    case "Gather":
      guard (int(node, "axis") ?? 0) == 0, node.input.count == 2, let indices = elements(node.input[1])?.map(\.constant) else {
        throw fail(node, "gathers from a shape at indices that are not constant")
      }
      return .elements(try indices.map { i -> ShapeExpr in
        switch first {
        case .shape(let x) where (i ?? -1) >= 0: return .dim(value: x, axis: i!)
        case .elements(let e) where i.map({ e.indices.contains($0 < 0 ? $0 + e.count : $0) }) ?? false:
          return e[i! < 0 ? i! + e.count : i!]
        default: throw fail(node, "gathers element \(i.map(String.init) ?? "?") of a shape whose length is not known")
        }
      })
    case "Concat":
      return .elements(try node.input.map { v in
        guard let e = elements(v) else { throw fail(node, "joins a whole shape whose length is not known") }
        return e
      }.flatMap { $0 })
    case "Slice":
      guard case .elements(let e) = first, node.input.count >= 3,
            let starts = elements(node.input[1])?.compactMap(\.constant), let ends = elements(node.input[2])?.compactMap(\.constant),
            starts.count == 1, ends.count == 1, node.input.count < 5 || elements(node.input[4])?.compactMap(\.constant) == [1] else {
        throw fail(node, "slices a shape other than at constant bounds with step 1")
      }
      let clamp = { (i: Int) in max(0, min(e.count, i < 0 ? i + e.count : i)) }
      return .elements(Array(e[clamp(starts[0])..<max(clamp(starts[0]), clamp(ends[0]))]))
    default:
      guard node.input.count == 2, let a = elements(node.input[0]), let b = elements(node.input[1]), a.count == b.count || a.count == 1 || b.count == 1 else {
        throw fail(node, "computes on shapes of different lengths")
      }
      let n = max(a.count, b.count)
      return .elements((0..<n).map { i in
        let (x, y) = (a[a.count == 1 ? 0 : i], b[b.count == 1 ? 0 : i])
        switch node.opType {
        case "Add": return .add(x, y)
        case "Sub": return .sub(x, y)
        case "Mul": return .mul(x, y)
        default: return .div(x, y)
        }
      })
    }
  }

  /// Bounds from which this many channel counts are tried when a Slice's bounds are matched to a chunk: a
  /// multiple of every part count up to 16, and small multiples of the part count found.
  static let chunkProbe = 720_720
  static let chunkChecks = [1, 2, 3, 4, 5, 7, 11, 16, 64]

  /// A Slice of an activation's channels at bounds computed from its own channel count, as `x.chunk(n, 1)`
  /// exports with the TorchScript exporter: part k of n, found by evaluating the bounds for many channel counts.
  mutating func sliceChannels(_ node: Onnx_NodeProto) throws {
    let x = try operand(node, 0)
    guard node.input.count >= 3 else { throw fail(node, "the starts and ends must be inputs (opset 10 and later)") }
    let axes = node.input.count > 3 && !node.input[3].isEmpty ? elements(node.input[3])?.map(\.constant) : [0]
    guard axes == [1] else { throw fail(node, "slices axes \(axes.map { "\($0)" } ?? "that are not constant"); cnnc slices channels (axis 1) only") }
    if node.input.count > 4, !node.input[4].isEmpty, elements(node.input[4])?.map(\.constant) != [1] {
      throw fail(node, "the steps must be 1")
    }
    guard let start = elements(node.input[1]), let end = elements(node.input[2]), start.count == 1, end.count == 1 else {
      throw fail(node, "the starts and ends must be one value each")
    }
    // The bounds as functions of the channel count: dimensions of any other value (or axis) are unknown here.
    func bounds(_ channels: Int) -> (Int, Int)? {
      let dim = { (v: String, axis: Int) in axis == 1 && self.values[v] == x ? channels : nil }
      guard let s = start[0].evaluate(dim), let e = end[0].evaluate(dim) else { return nil }
      let clamp = { (i: Int) in max(0, min(channels, i < 0 ? i + channels : i)) }
      return (clamp(s), clamp(e))
    }
    let refusal = "slices channels at bounds cnnc cannot read as equal parts of the channel count (x.chunk(n, 1)); other slices are not supported"
    guard let (s, e) = bounds(Translator.chunkProbe), e > s, Translator.chunkProbe % (e - s) == 0, s % (e - s) == 0 else { throw fail(node, refusal) }
    let parts = Translator.chunkProbe / (e - s), index = s / (e - s)
    for m in Translator.chunkChecks {
      let c = m * parts
      guard let (s2, e2) = bounds(c), s2 == index * c / parts, e2 == (index + 1) * c / parts else { throw fail(node, refusal) }
    }
    define(node, layerName(node, weight: nil), "chunk(\(x), chunks: \(parts), index: \(index))")
  }
}
