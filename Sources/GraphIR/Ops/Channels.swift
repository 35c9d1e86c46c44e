/// `concat(x1, x2, ...)`: the operands joined along the channels (`torch.cat(xs, 1)`), every other dimension
/// equal; each operand's gradient is its channels of dy.
public struct ConcatOp: ForwardOp {
  public var count: Int
  public init(count: Int) { self.count = count }
  public static let syntax = OpSyntax("concat", operands: ["x1", "x2"]) { a throws(AttrError) in .concat(count: try a.variadicCount()) }
  public var operandNames: [String] { (1...count).map { "x\($0)" } }
  public var onnx: ONNXForm { .node("Concat", inputs: (0..<count).map { .operand($0) }, attributes: [ONNXAttribute("axis", .int(1))]) }
  public static let onnxReading = ONNXReading.node(["Concat"]) { n in
    guard let axis = n.int("axis"), axis == 1 else {
      throw n.fail("attribute 'axis' is \(n.int("axis").map(String.init) ?? "absent"); cnnc joins activations along the channels (axis 1)")
    }
    return ONNXRead(.concat(count: n.inputCount), operands: Array(0..<n.inputCount))
  }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Channels.concatType(spelling, x) }
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    wants.indices.map { i in wants[i] ? b.emit("\(node.args[i])_grad", .concatGrad(part: i), [dy] + node.args) : nil }
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let parts = try (0..<count).map { i throws(EvaluationError) in try x.f32(i) }
    let n = parts[0].shape[0], channels = parts.map { $0.shape[1] }.reduce(0, +)
    var y = Tensor<T>(zeros: [n, channels] + parts[0].shape.dropFirst(2))
    var offset = 0
    for p in parts {
      let block = p.data.count / n, total = y.data.count / n
      for b in 0..<n { for i in 0..<block { y.data[b * total + offset + i] = p.data[b * block + i] } }
      offset += block
    }
    return [y]
  }
}

/// `concat_grad(dy, x1, x2, ..., part)`: the channels of dy that operand `part` of the concat gave (the operands
/// give only their shapes).
public struct ConcatGradOp: BackwardOp {
  public var part: Int
  public init(part: Int) { self.part = part }
  static let attrs = [AttrSpec("part", .int, required: true)]
  public static let syntax = OpSyntax("concat_grad", operands: ["dy", "x1", "x2"], attrs: attrs) { a throws(AttrError) in
    let count = try a.variadicCount(minimum: 3) - 1, part = try a.int("part", min: 0)
    guard part < count else { throw AttrError(attribute: "part", message: "'part' must name one of the \(count) concatenated operands, got \(part)") }
    return .concatGrad(part: part)
  }
  public var printedAttributes: [(String, String)] { [("part", "\(part)")] }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType {
    let y = try Channels.concatType("concat_grad", Array(x.dropFirst()))
    guard y == x[0] else { throw ShapeError("concat_grad: dy \(x[0]) does not match the concat's output \(y)") }
    guard part + 1 < x.count else { throw ShapeError("concat_grad: part \(part) of \(x.count - 1) operands") }
    return x[part + 1]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let dy = try x.f32(0), shape = try x.f32(part + 1).shape
    let n = dy.shape[0], block = shape.dropFirst().reduce(1, *), total = dy.data.count / n
    var offset = 0
    for i in 0..<part { offset += try x.f32(i + 1).data.count / n }
    var dx = Tensor<T>(zeros: shape)
    for b in 0..<n { for i in 0..<block { dx.data[b * block + i] = dy.data[b * total + offset + i] } }
    return [dx]
  }
}

/// `mul(a, b)`: the elementwise product, where either operand may instead be a per-channel gate [N, C, 1, 1]
/// that scales each plane of the other (squeeze-excitation's `x * gate`).
public struct MulOp: ForwardOp {
  public init() {}
  public static let syntax = OpSyntax("mul", operands: ["a", "b"]) { _ in .mul }
  public var onnx: ONNXForm { .node("Mul", inputs: [.operand(0), .operand(1)], attributes: []) }
  /// A product of two activations (a squeeze-excitation gate's); the import takes x times Sigmoid(x) as SiLU first.
  public static let onnxReading = ONNXReading.node(["Mul"]) { n in
    guard n.inputCount == 2 else { throw n.fail("Mul takes two inputs") }
    guard n.isActivation(0), n.isActivation(1) else {
      throw n.fail("a product with a constant is not supported; cnnc multiplies two activations (or one by a [N, C, 1, 1] gate)")
    }
    return ONNXRead(.mul, operands: [0, 1])
  }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Channels.productType(spelling, x[0], x[1]) }
  /// Each operand's gradient is dy times the other, summed over the planes for a gate.
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    let (a, c) = (node.args[0], node.args[1])
    return [wants[0] ? b.emit("\(a)_grad", .mulGrad, [dy, c, a]) : nil, wants[1] ? b.emit("\(c)_grad", .mulGrad, [dy, a, c]) : nil]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Channels.broadcast(try x.f32(0), try x.f32(1), *)]
  }
}

/// `mul_grad(dy, other, x)`: dy times the other operand of the `mul`, summed over each plane when x is the gate.
public struct MulGradOp: BackwardOp {
  public init() {}
  public static let syntax = OpSyntax("mul_grad", operands: ["dy", "other", "x"]) { _ in .mulGrad }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType {
    let y = try Channels.productType("mul_grad", x[1], x[2])
    guard y == x[0] else { throw ShapeError("mul_grad: dy \(x[0]) does not match the product's \(y)") }
    return x[2]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let (dy, other, shape) = (try x.f32(0), try x.f32(1), try x.f32(2).shape)
    let count = shape.reduce(1, *)
    if count == dy.data.count {
      // dy * other, with the other operand a gate or not.
      let plane = dy.data.count / other.data.count
      return [Tensor(shape: shape, data: dy.data.indices.map { dy.data[$0] * other.data[$0 / plane] })]
    }
    // x is the gate: the sum over each plane of dy * other, in order.
    return [Channels.planeSums(shape, of: dy.data.count) { dy.data[$0] * other.data[$0] }]
  }
}

/// Shape rules of the channel ops, and the broadcasting arithmetic their reference kernels share.
public enum Channels {
  /// `op(a, b)` elementwise, where one operand may be per-channel ([N, C, 1, 1]) and is read once per plane of
  /// the other; in operand order, so either side rounds as the kernels do.
  static func broadcast<T: Real>(_ a: Tensor<T>, _ b: Tensor<T>, _ op: (T, T) -> T) -> Tensor<T> {
    let aIsFull = a.data.count >= b.data.count
    let (full, other) = aIsFull ? (a, b) : (b, a)
    let plane = full.data.count / other.data.count
    return Tensor(shape: full.shape, data: full.data.indices.map { i in
      aIsFull ? op(full.data[i], other.data[i / plane]) : op(other.data[i / plane], full.data[i])
    })
  }

  /// A tensor of `shape` whose element q is the sum, in order, of `term(i)` over plane q of `total` elements.
  static func planeSums<T: Real>(_ shape: [Int], of total: Int, _ term: (Int) -> T) -> Tensor<T> {
    let count = shape.reduce(1, *), plane = total / count
    var out = Tensor<T>(zeros: shape)
    for q in 0..<count {
      var s: T = 0
      for i in 0..<plane { s += term(q * plane + i) }
      out.data[q] = s
    }
    return out
  }

  /// Operands of one rank (2 or more) and dtype f32, equal but in the channels: the channels summed.
  static func concatType(_ op: String, _ x: [TensorType]) throws(ShapeError) -> TensorType {
    let first = x[0]
    guard first.dims.count >= 2 else { throw ShapeError("\(op) joins channels (axis 1), and \(first) has none", operand: 0) }
    var channels = 0
    for (i, t) in x.enumerated() {
      guard t.dtype == .f32 else { throw ShapeError("\(op) needs f32 operands, got \(t)", operand: i) }
      guard t.dims.count == first.dims.count, t.dims[0] == first.dims[0], t.dims.dropFirst(2).elementsEqual(first.dims.dropFirst(2)) else {
        throw ShapeError("\(op) needs operands equal in every dimension but the channels, got \(first) and \(t)", operand: i)
      }
      channels += t.dims[1]
    }
    return try checkedType(op, [first.dims[0], channels] + first.dims.dropFirst(2))
  }

  /// Two f32 operands of one shape, or one [N, C, H, W] and one [N, C, 1, 1] gate (either way round): the full shape.
  static func productType(_ op: String, _ a: TensorType, _ b: TensorType) throws(ShapeError) -> TensorType {
    guard a.dtype == .f32, b.dtype == .f32 else { throw ShapeError("\(op) needs f32 operands, got \(a) and \(b)") }
    if a.dims == b.dims { return a }
    func gates(_ g: TensorType, _ x: TensorType) -> Bool {
      x.dims.count == 4 && g.dims == [x.dims[0], x.dims[1], 1, 1]
    }
    if gates(b, a) { return a }
    if gates(a, b) { return b }
    throw ShapeError("\(op) needs operands of one shape, or [N, C, H, W] and a [N, C, 1, 1] gate, got \(a) and \(b)", operand: 1)
  }
}

/// `chunk(x, chunks, index)`: the `index`-th of `chunks` equal parts of the channels (`x.chunk(chunks, 1)[index]`,
/// ShuffleNet's split); the gradient puts dy back in its channels, zeros elsewhere.
public struct ChunkOp: ForwardOp {
  public var chunks: Int
  public var index: Int
  public init(chunks: Int, index: Int) {
    self.chunks = chunks
    self.index = index
  }
  static let attrs = [AttrSpec("chunks", .int, required: true), AttrSpec("index", .int, required: true)]
  /// The attributes, checked: an index among the chunks.
  static func parts(_ a: Attributes) throws(AttrError) -> (chunks: Int, index: Int) {
    let chunks = try a.int("chunks", min: 1), index = try a.int("index", min: 0)
    guard index < chunks else { throw AttrError(attribute: "index", message: "'index' must be below 'chunks' (\(chunks)), got \(index)") }
    return (chunks, index)
  }
  public static let syntax = OpSyntax("chunk", operands: ["x"], attrs: attrs) { a throws(AttrError) in
    let p = try parts(a)
    return .chunk(chunks: p.chunks, index: p.index)
  }
  public var printedAttributes: [(String, String)] { [("chunks", "\(chunks)"), ("index", "\(index)")] }
  /// Opset 17's Split and Slice name channel counts, which depend on the input's shape and not on the op alone.
  public var onnx: ONNXForm { .split(parts: chunks, index: index) }
  public static let onnxReading = ONNXReading.pattern("Split of the channels into equal parts, or Slices at bounds computed from the channel count")
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Channels.chunkType(spelling, chunks, x[0]) }
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    [wants[0] ? b.emit("\(node.args[0])_grad", .chunkGrad(chunks: chunks, index: index), [dy, node.args[0]]) : nil]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let t = try x.f32(0)
    let n = t.shape[0], total = t.data.count / n, block = total / chunks
    var y = Tensor<T>(zeros: [n, t.shape[1] / chunks] + t.shape.dropFirst(2))
    for b in 0..<n { for i in 0..<block { y.data[b * block + i] = t.data[b * total + index * block + i] } }
    return [y]
  }
}

/// `chunk_grad(dy, x, chunks, index)`: dy in the channels of chunk `index`, zeros elsewhere; x gives only the shape.
public struct ChunkGradOp: BackwardOp {
  public var chunks: Int
  public var index: Int
  public init(chunks: Int, index: Int) {
    self.chunks = chunks
    self.index = index
  }
  public static let syntax = OpSyntax("chunk_grad", operands: ["dy", "x"], attrs: ChunkOp.attrs) { a throws(AttrError) in
    let p = try ChunkOp.parts(a)
    return .chunkGrad(chunks: p.chunks, index: p.index)
  }
  public var printedAttributes: [(String, String)] { [("chunks", "\(chunks)"), ("index", "\(index)")] }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType {
    guard try Channels.chunkType("chunk_grad", chunks, x[1]) == x[0] else { throw ShapeError("chunk_grad: dy \(x[0]) is not a chunk of \(x[1])") }
    return x[1]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    let dy = try x.f32(0), shape = try x.f32(1).shape
    let n = shape[0], block = dy.data.count / n, total = block * chunks
    var dx = Tensor<T>(zeros: shape)
    for b in 0..<n { for i in 0..<block { dx.data[b * total + index * block + i] = dy.data[b * block + i] } }
    return [dx]
  }
}

/// `channel_shuffle(x, groups)`: the channels as a [groups, C / groups] matrix, transposed (ShuffleNet's shuffle:
/// output channel j * groups + i is input channel i * (C / groups) + j); the gradient is the inverse permutation.
public struct ChannelShuffleOp: ForwardOp {
  public var groups: Int
  public init(groups: Int) { self.groups = groups }
  static let attrs = [AttrSpec("groups", .int, required: true)]
  public static let syntax = OpSyntax("channel_shuffle", operands: ["x"], attrs: attrs) { a throws(AttrError) in .channelShuffle(groups: try a.int("groups", min: 1)) }
  public var printedAttributes: [(String, String)] { [("groups", "\(groups)")] }
  /// Its ONNX form, Reshape to 5-D, Transpose and Reshape back, names the input's channels and spatial size.
  public var onnx: ONNXForm { .channelShuffle(groups: groups) }
  public static let onnxReading = ONNXReading.pattern("Reshape to [N, groups, C / groups, H, W], Transpose [0, 2, 1, 3, 4], Reshape back")
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Channels.shuffleType(spelling, groups, x[0]) }
  public func gradient(_ node: Node, dy: String, wants: [Bool], _ b: inout GradientBuilder) -> [String?] {
    [wants[0] ? b.emit("\(node.args[0])_grad", .channelShuffleGrad(groups: groups), [dy]) : nil]
  }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Channels.shuffle(try x.f32(0), groups: groups, inverse: false)]
  }
}

/// `channel_shuffle_grad(dy, groups)`: dy's channels put back where `channel_shuffle` took them from.
public struct ChannelShuffleGradOp: BackwardOp {
  public var groups: Int
  public init(groups: Int) { self.groups = groups }
  public static let syntax = OpSyntax("channel_shuffle_grad", operands: ["dy"], attrs: ChannelShuffleOp.attrs) { a throws(AttrError) in
    .channelShuffleGrad(groups: try a.int("groups", min: 1))
  }
  public var printedAttributes: [(String, String)] { [("groups", "\(groups)")] }
  public func resultType(_ x: [TensorType]) throws(ShapeError) -> TensorType { try Channels.shuffleType(spelling, groups, x[0]) }
  public func reference<T: Real>(_ x: Operands<T>, _ ctx: ReferenceContext) throws(EvaluationError) -> [Tensor<T>] {
    [Channels.shuffle(try x.f32(0), groups: groups, inverse: true)]
  }
}

extension Channels {
  /// A tensor of rank 2 or more whose channels `chunks` divides: the channels of one chunk.
  static func chunkType(_ op: String, _ chunks: Int, _ x: TensorType) throws(ShapeError) -> TensorType {
    guard x.dtype == .f32, x.dims.count >= 2 else { throw ShapeError("\(op) splits channels (axis 1) of an f32 tensor, got \(x)") }
    guard x.dims[1] % chunks == 0 else { throw ShapeError("\(op) needs channels divisible by \(chunks) chunks, got \(x)") }
    return try checkedType(op, [x.dims[0], x.dims[1] / chunks] + x.dims.dropFirst(2))
  }

  /// A tensor of rank 2 or more whose channels `groups` divides: the same type.
  static func shuffleType(_ op: String, _ groups: Int, _ x: TensorType) throws(ShapeError) -> TensorType {
    guard x.dtype == .f32, x.dims.count >= 2 else { throw ShapeError("\(op) shuffles channels (axis 1) of an f32 tensor, got \(x)") }
    guard x.dims[1] % groups == 0 else { throw ShapeError("\(op) needs channels divisible by \(groups) groups, got \(x)") }
    return x
  }

  /// Input channel of output channel `c` of a shuffle of `channels` in `groups` (or of its inverse).
  public static func shuffledSource(_ c: Int, channels: Int, groups: Int, inverse: Bool) -> Int {
    let (rows, cols) = inverse ? (channels / groups, groups) : (groups, channels / groups)
    // Output c = j * rows + i reads input i * cols + j.
    return (c % rows) * cols + c / rows
  }

  static func shuffle<T: Real>(_ x: Tensor<T>, groups: Int, inverse: Bool) -> Tensor<T> {
    let n = x.shape[0], c = x.shape[1], plane = x.data.count / (n * c)
    var y = Tensor<T>(zeros: x.shape)
    for b in 0..<n { for o in 0..<c {
      let s = shuffledSource(o, channels: c, groups: groups, inverse: inverse)
      for i in 0..<plane { y.data[(b * c + o) * plane + i] = x.data[(b * c + s) * plane + i] }
    } }
    return y
  }
}
