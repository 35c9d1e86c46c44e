import CNNCTestSupport
import Foundation
import GraphIR
import LLVMBackend
import Lowering
import Testing

/// The optimised IR of SimpleCNN's training step keeps its vectorised kernels: a regression in how
/// the IR is built or optimised (e.g. a lost TargetMachine or alias information) fails here.
@Suite struct VectorizationSnapshotTests {
  @Test func simpleCNNTrainingStepIsVectorised() throws {
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent("simplecnn.graph"))
    let module = LLVMRenderer.render([try lower(g, batch: 64, mode: .train(OptimizerSpec(kind: .adam)), target: .host())], moduleName: "snapshot")
    try module.verify()
    try module.optimize(try TargetMachine(.host()))
    let ir = module.text
    let snapshot = try String(contentsOf: Fixtures.root.appendingPathComponent("Tests/BackendTests/Snapshots/simplecnn.vectorized.txt"), encoding: .utf8)
    let patterns = snapshot.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }
    #expect(patterns.count == 5)
    for p in patterns {
      #expect(ir.range(of: String(p), options: .regularExpression) != nil, "optimised IR lacks /\(p)/")
    }
    // Buffer arguments carry noalias, and the values are named after the graph's statements.
    #expect(ir.contains("ptr noalias"))
    #expect(ir.contains("%conv2_weight_grad."))
  }

  /// The kernels of the zoo's ops (format 1.3) work in vectors along their contiguous axis on this machine's
  /// target and the lower one: depthwise convs and both their gradients, the activations (GELU's rational erf too),
  /// the gated product and its input gradient, the per-channel add, the concat (`j_grad` is gelu_grad). (The padded pools' per-tap bounds checks keep them scalar on AVX2; the
  /// gate's gradient sums each plane in order, as the reference does.)
  @Test(arguments: TestTargets.names) func zooKernelsAreVectorised(_ targetName: String) throws {
    let g = try Parser.parse("""
      input x: f32[N, 16, 28, 28]
      input y: i32[N]
      dw = conv2d(x, filters: 16, kernel: 3, padding: 1, groups: 16)
      s1 = silu(dw)
      dw5 = conv2d(s1, filters: 16, kernel: 5, stride: 2, padding: 2, groups: 16)
      h = hardswish(dw5)
      g = global_avgpool(h)
      gate = hardsigmoid(g)
      se = mul(h, gate)
      c1 = conv2d(se, filters: 8, kernel: 1)
      r6 = clip(c1, min: 0.0, max: 6.0)
      j = concat(se, r6)
      g2 = global_avgpool(j)
      gl = gelu(j)
      b = add(gl, g2)
      f = flatten(b)
      o = dense(f, units: 10)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """, defaultName: "zoo")
    let target = try TestTargets.resolve(targetName)
    // A shard's gradients: its kernels are not split, so each kernel's loops are in the kernel's own function.
    let module = LLVMRenderer.render([try lower(g, batch: 4, mode: .gradients, target: target)], moduleName: "zoo")
    try module.verify()
    try module.optimize(try TargetMachine(target))
    // Each kernel is a function named after its statement: `zoo_grad_b4.kN.NAME`.
    var kernels: [String: String] = [:]
    for block in module.text.components(separatedBy: "\ndefine ").dropFirst() {
      guard let at = block.firstIndex(of: "@"), let open = block[at...].firstIndex(of: "(") else { continue }
      let name = block[block.index(after: at)..<open]
      guard let dot = name.lastIndex(of: "."), name.contains(".k") else { continue }
      kernels[String(name[name.index(after: dot)...])] = block.components(separatedBy: "\n}\n")[0]
    }
    for name in ["dw", "dw5", "s1", "h", "gate", "se", "r6", "j", "gl", "b", "j_grad", "dw_grad", "dw_weight_grad", "dw5_grad", "dw5_weight_grad", "h_grad", "s1_grad"] {
      let body = try #require(kernels[name], "no kernel function for '\(name)' (\(kernels.keys.sorted()))")
      #expect(body.range(of: "<\\d+ x float>", options: .regularExpression) != nil, "'\(name)' is scalar on \(target.cpu)")
    }
  }
}
