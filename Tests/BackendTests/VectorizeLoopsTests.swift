import CNNCTestSupport
import Foundation
import LLVMBackend
import Lowering
import Runtime
import Testing

/// The elementwise-loop vectoriser (run for the Swift back end) changes no bit: a training step of its
/// output, rendered by the LLVM back end (which then renders every vector form it makes), gives exactly the
/// weights, optimiser state and activations of the scalar program, on every target this machine runs.
@Suite struct VectorizeLoopsTests {
  @Test(arguments: ["simplecnn.graph", "bncnn.graph", "residual.graph"], TestTargets.names)
  func vectorizedTrainingStepIsBitIdentical(_ graph: String, _ target: String) throws {
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent(graph))
    let scalar = try lower(g, batch: 4, mode: .train(OptimizerSpec(kind: .adam)), target: try TestTargets.resolve(target))
    let vector = vectorizeElementwiseLoops(scalar)
    #expect(vector != scalar, "nothing was vectorised")
    // Two compiles: the programs' functions have the same names.
    var jit = try JITCompiler(target: scalar.target)
    let results = try [scalar, vector].map { Self.step(try jit.compile([$0])[0], scalar) }
    #expect(results[0].params == results[1].params, "weights after the step")
    #expect(results[0].m == results[1].m && results[0].v == results[1].v, "Adam's moments")
    #expect(results[0].arena == results[1].arena, "activations and gradients")
  }

  /// One training step from fixed inputs: the buffers afterwards, bit patterns.
  static func step(_ entry: EntryPoint, _ p: Program) -> (params: [UInt32], m: [UInt32], v: [UInt32], arena: [UInt32]) {
    var params = (0..<(p.parameterFloats + p.bufferFloats)).map { Float(sin(Double($0) * 0.7)) * 0.1 }
    var grads = [Float](repeating: 0, count: max(1, p.parameterFloats))
    var m = [Float](repeating: 0, count: max(1, p.parameterFloats)), v = m
    var arena = [Float](repeating: 0, count: max(1, p.arenaFloats))
    let images = (0..<p.imageFloats).map { Float(cos(Double($0) * 0.13)) }
    let labels = (0..<p.batch).map { Int32($0 % p.classes) }
    params.withUnsafeMutableBufferPointer { pp in
      grads.withUnsafeMutableBufferPointer { gp in
        m.withUnsafeMutableBufferPointer { mp in
          v.withUnsafeMutableBufferPointer { vp in
            arena.withUnsafeMutableBufferPointer { ap in
              entry(pp.baseAddress, gp.baseAddress, mp.baseAddress, vp.baseAddress, ap.baseAddress, images, labels, 1e-3, 1, 7)
            }
          }
        }
      }
    }
    return (params.map(\.bitPattern), m.map(\.bitPattern), v.map(\.bitPattern), arena.map(\.bitPattern))
  }
}
