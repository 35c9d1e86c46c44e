import Runtime

/// A structure-aware generator of valid `.graph` files: convolutions of any kernel, stride and padding,
/// batch norm, the activations (relu, leaky_relu, tanh, sigmoid), max and average pools, global average pooling,
/// residual `add`s, dropout, dense layers of any width (1 included), softmax, and a cross-entropy loss. It tracks shapes as it goes, so every file it writes is valid by construction;
/// the seed alone fixes the file.
public struct RandomGraph {
  public let source: String
  /// Statements in the file (for messages).
  public let statements: Int

  public init(seed: UInt64) {
    var r = SeededRandom(seed: seed, stream: 0x6e72_6170_68)
    func pick(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(r.next() % UInt64(range.count)) }
    func chance(_ p: Double) -> Bool { Double(r.next() % 1000) < p * 1000 }
    var lines: [String] = []
    var (c, h, w) = (pick(1...3), pick(4...13), pick(4...13))
    lines.append("input x: f32[N, \(c), \(h), \(w)]")
    lines.append("input y: i32[N]")
    var v = "x", k = 0
    func name(_ p: String) -> String { k += 1; return "\(p)\(k)" }
    func emit(_ p: String, _ rhs: String) { let n = name(p); lines.append("\(n) = \(rhs)"); v = n }
    // Mostly relu (so fusion is exercised), sometimes the other activations.
    func activation() {
      switch pick(0...9) {
      case 0, 1: emit("leaky", "leaky_relu(\(v)\(chance(0.5) ? ", slope: 0.2" : ""))")
      case 2: emit("tanh", "tanh(\(v))")
      case 3: emit("sig", "sigmoid(\(v))")
      default: emit("relu", "relu(\(v))")
      }
    }
    for _ in 0..<pick(0...3) {
      let kernel = pick(1...min(5, min(h, w) + 2)), padding = pick(0...min(2, kernel - 1))
      let stride = pick(1...3), filters = pick(1...6)
      guard kernel <= min(h, w) + 2 * padding else { continue }
      let before = v, (bc, bh, bw) = (c, h, w)
      emit("conv", "conv2d(\(v), filters: \(filters), kernel: \(kernel)\(stride > 1 ? ", stride: \(stride)" : "")\(padding > 0 ? ", padding: \(padding)" : "")\(chance(0.2) ? ", bias: false" : ""))")
      (c, h, w) = (filters, (h + 2 * padding - kernel) / stride + 1, (w + 2 * padding - kernel) / stride + 1)
      // Batch norm where every shard has at least two values per channel (one image of two pixels or more).
      if h * w >= 2, chance(0.25) { emit("bn", "batchnorm(\(v)\(chance(0.3) ? ", affine: false" : "")\(chance(0.3) ? ", momentum: 0.5" : ""))") }
      if chance(0.7) { activation() }
      // A residual connection where the shapes agree: the shortcut's gradient fans out.
      if (c, h, w) == (bc, bh, bw), chance(0.8) { emit("add", "add(\(v), \(before))") }
      if chance(0.6), min(h, w) >= 2 {
        let size = pick(1...min(3, min(h, w))), ps = pick(1...3)
        let op = chance(0.6) ? "maxpool" : "avgpool"
        emit(op, "\(op)(\(v), size: \(size)\(ps != size ? ", stride: \(ps)" : ""))")
        (h, w) = ((h - size) / ps + 1, (w - size) / ps + 1)
      }
      if chance(0.2) { emit("drop", "dropout(\(v), rate: \(["0.1", "0.25", "0.5"][pick(0...2)]))") }
    }
    if chance(0.15) {
      emit("gap", "global_avgpool(\(v))")
      (h, w) = (1, 1)
    }
    emit("flat", "flatten(\(v))")
    for _ in 0..<pick(0...3) {
      emit("fc", "dense(\(v), units: \([1, 1, 2, 3, 7, 12, 33][pick(0...6)])\(chance(0.2) ? ", bias: false" : ""))")
      if chance(0.6) { activation() }
      if chance(0.2) { emit("drop", "dropout(\(v), rate: 0.3)") }
      if chance(0.1) { emit("soft", "softmax(\(v))") }
    }
    emit("logits", "dense(\(v), units: \(pick(2...5)))")
    let logits = v
    lines.append("loss = cross_entropy(\(logits), y)")
    lines.append("output \(logits)")
    lines.append("minimize loss")
    source = lines.joined(separator: "\n") + "\n"
    statements = lines.count
  }
}
