import CNNCTestSupport
import Foundation
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
}
