import Foundation
import GraphIR
import Passes

/// A graph's `state_dict`: the learnable parameters and the buffers (non-learnable float state such as
/// running statistics) as flat Float arrays, and the step counters as integers.
public struct Parameters: Equatable, Sendable {
  /// Learnable parameters, in `state_dict` order: what has gradients and optimiser state.
  public var names: [String]
  /// Buffers, in definition order.
  public var buffers: [String] = []
  /// Shapes and values of parameters and buffers.
  public var shapes: [String: [Int]]
  public var values: [String: [Float]]
  /// Step counters (`NAME.num_batches_tracked`): training steps the owning op has taken part in.
  public var counters: [String: Int64] = [:]
  /// What each buffer may hold, from its op (checked by `load`).
  public var bufferDomains: [String: BufferDomain] = [:]

  /// PyTorch's default initialisation: weight and bias uniform in ±1/sqrt(fan_in), fan_in = C*k*k or F,
  /// unless the op gives a constant (batch norm's 1 and 0); buffers start at their op's constants.
  /// Each parameter draws from its own stream so adding a layer does not change the others.
  public init(graph: Graph, shapes table: ShapeTable, seed: UInt64) {
    names = graph.parameterNames
    buffers = graph.bufferNames
    shapes = [:]
    values = [:]
    let owners = Dictionary(graph.nodes.map { ($0.name, $0.op) }) { a, _ in a }
    for (i, name) in (names + buffers).enumerated() {
      let shape = table[name]!.dims
      let owner = String(name.split(separator: ".")[0]), suffix = String(name.split(separator: ".")[1])
      shapes[name] = shape
      if buffers.contains(name) { bufferDomains[name] = owners[owner]?.definition.bufferDomain(suffix) ?? .finite }
      if let constant = owners[owner]?.definition.initialValue(suffix) {
        values[name] = [Float](repeating: constant, count: shape.reduce(1, *))
        continue
      }
      let weightShape = table["\(owner).weight"]!.dims
      let fanIn = weightShape.dropFirst().reduce(1, *)
      let bound = 1 / Float(fanIn).squareRoot()
      var rng = SeededRandom(seed: seed, stream: UInt64(i + 1))
      values[name] = (0..<shape.reduce(1, *)).map { _ in rng.uniform(-bound, bound) }
    }
    counters = Dictionary(uniqueKeysWithValues: graph.counterNames.map { ($0, 0) })
  }

  public init(names: [String], shapes: [String: [Int]], values: [String: [Float]], buffers: [String] = [], counters: [String: Int64] = [:]) {
    self.names = names
    self.shapes = shapes
    self.values = values
    self.buffers = buffers
    self.counters = counters
  }

  /// Parameters and buffers as the interpreter's tensors, by name.
  public func tensors() -> [String: Tensor<Float>] {
    Dictionary(uniqueKeysWithValues: (names + buffers).map { ($0, Tensor(shape: shapes[$0]!, data: values[$0]!)) })
  }

  /// Learnable parameters (what PyTorch's `parameters()` counts).
  public var count: Int { names.reduce(0) { $0 + (values[$1]?.count ?? 0) } }

  /// Folds one training step's batch statistics of the stateful node `node` into its buffers (each
  /// shard's statistics in shard order; see `StatefulOp`) and counts the step.
  public mutating func update(_ node: Node, shardStatistics: [[[Float]]], elementsPerShard: Int) {
    guard let op = node.op.definition as? any StatefulOp else { return }
    let names = op.bufferSuffixes.map { "\(node.name).\($0)" }
    let updated = op.updatedBuffers(names.map { values[$0]! }, shardStatistics: shardStatistics, elementsPerShard: elementsPerShard)
    for (n, v) in zip(names, updated) { values[n] = v }
    op.countStep(&counters, node: node.name)
  }
}
