import GraphIR
import Lowering
import Passes
import Testing

/// The lowering's own rules, without a back end: every op has a kernel, views take no storage, values whose
/// lifetimes do not overlap share the arena.
@Suite struct LoweringTests {
  @Test func everyOpHasALowering() {
    let missing = Op.definitions.filter { !hasLowering($0) }.map { $0.syntax.name }
    #expect(missing.isEmpty, "ops without a lowering: \(missing)")
    let names = Op.definitions.map { $0.syntax.name }
    #expect(Set(names).count == names.count, "two ops share a spelling: \(names)")
  }

  static let chain = """
    input x: f32[N, 4, 8, 8]
    input y: i32[N]
    a = sigmoid(x)
    b = tanh(a)
    c = leaky_relu(b)
    e = sigmoid(c)
    p = global_avgpool(e)
    f = flatten(p)
    d = dense(f, units: 3)
    loss = cross_entropy(d, y)
    output d
    minimize loss
    """

  @Test func flattenIsAViewAndDeadValuesShareTheArena() throws {
    let g = try Parser.parse(Self.chain, defaultName: "chain")
    let p = try lower(g, batch: 2, mode: .infer, target: Target.named("x86-64-v3", isa: .avx2))
    #expect(p.functions.count == 1)
    // a, b, c and e are 2*4*8*8 = 512 floats each; with reuse at most two are alive at once, and the
    // flatten of p (8 floats) takes no storage of its own.
    #expect(p.arenaFloats <= 2 * 512 + 64)
  }
}
