import GraphIR
import Passes

/// How an op becomes kernel-IR statements. Each op family conforms in `Kernels/X.swift`, beside the kernels
/// it emits; an op without a conformance is a compiler defect that `lower` reports before emitting anything.
protocol Lowerable: OpDefinition {
  /// Appends the node's kernel to the emitter's body.
  func lower(_ n: Node, _ e: inout Emitter)
  /// Floats of scratch the kernel needs while it runs (column matrices and the like).
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int
  /// The operand whose storage the value shares (a view), or nil when it has storage of its own.
  func aliasedOperand(training: Bool) -> Int?
  /// Why the node cannot be compiled at these shapes (a rule its shape rule cannot state because it
  /// depends on the purpose), or nil.
  func check(_ n: Node, _ shapes: ShapeTable, training: Bool) -> String?
  /// Which of the node's values its inference kernel takes channels-last (`chooseChannelsLast`).
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule
}

extension Lowerable {
  func scratchFloats(_ n: Node, _ shapes: ShapeTable, _ target: Target, training: Bool) -> Int { 0 }
  func aliasedOperand(training: Bool) -> Int? { nil }
  func check(_ n: Node, _ shapes: ShapeTable, training: Bool) -> String? { nil }
  func layoutRule(_ n: Node, _ shapes: ShapeTable, _ target: Target) -> LayoutRule { .planar }
}

/// The lowering of a node's op, or an error naming the op that has none.
func lowering(of n: Node) throws(DiagnosticList) -> any Lowerable {
  guard let l = n.op.definition as? any Lowerable else {
    throw DiagnosticList([.error("'\(n.name)': \(n.op.spelling) has no lowering in this compiler (a compiler defect)", at: n.opRange)])
  }
  return l
}

/// The operand a value shares its storage with, if it is a view.
func aliasSource(_ n: Node, training: Bool) -> String? {
  (n.op.definition as? any Lowerable)?.aliasedOperand(training: training).map { n.args[$0] }
}

/// The activations' formulas render as kernel-IR expressions, so the lowering evaluates the same
/// definition as the reference kernels.
extension FExpr: ActivationScalar {
  public static func constant(_ v: Double) -> FExpr { .c(Float(v)) }
  public static func exponential(_ x: FExpr) -> FExpr { .exp(x) }
  public static func ifPositive(_ test: FExpr, _ a: FExpr, _ b: FExpr) -> FExpr { .select(.fgt(test, .c(0)), a, b) }
}

// MARK: Strides clamped to the extent they slide over

extension Conv2DAttrs {
  /// The attributes with the stride clamped to the padded input. A stride beyond that extent only ever takes
  /// the first window, so the clamped op computes the same values, and the lowering's index constants (stride
  /// times a row length) stay far from overflow however large the stride written in the file.
  func clamped(input d: [Int]) -> Conv2DAttrs {
    guard d.count == 4 else { return self }
    var a = self
    a.stride = min(a.stride, max(d[2], d[3]) + 2 * a.padding)
    return a
  }

  /// The spatial output size for an input [N, C, H, W].
  func output(_ d: [Int]) -> (h: Int, w: Int) {
    ((d[2] + 2 * padding - extent) / stride + 1, (d[3] + 2 * padding - extent) / stride + 1)
  }
}

extension PoolAttrs {
  /// The attributes with the stride clamped to an h x w input (see `Conv2DAttrs.clamped`).
  func clamped(_ h: Int, _ w: Int) -> PoolAttrs {
    var p = self
    // Past the input and its leading padding a second window cannot start, so a larger stride changes nothing.
    p.stride = min(p.stride, max(h, w, 1) + p.padding)
    return p
  }

  func clamped(input d: [Int]) -> PoolAttrs { d.count == 4 ? clamped(d[2], d[3]) : self }
}

/// True when ops of this definition can be lowered (every op of `Op.definitions` must be).
public func hasLowering(_ definition: any OpDefinition.Type) -> Bool { definition is any Lowerable.Type }
