import Foundation
import GraphIR
import Passes

/// The learnable parameters of a graph, in `state_dict` order, as flat Float arrays.
public struct Parameters: Equatable, Sendable {
  public var names: [String]
  public var shapes: [String: [Int]]
  public var values: [String: [Float]]

  /// PyTorch's default initialisation: weight and bias uniform in ±1/sqrt(fan_in), fan_in = C*k*k or F.
  /// Each parameter draws from its own stream so adding a layer does not change the others.
  public init(graph: Graph, shapes table: ShapeTable, seed: UInt64) {
    names = graph.parameterNames
    shapes = [:]
    values = [:]
    for (i, name) in names.enumerated() {
      let shape = table[name]!.dims
      let owner = String(name.split(separator: ".")[0])
      let weightShape = table["\(owner).weight"]!.dims
      let fanIn = weightShape.dropFirst().reduce(1, *)
      let bound = 1 / Float(fanIn).squareRoot()
      var rng = SeededRandom(seed: seed, stream: UInt64(i + 1))
      shapes[name] = shape
      values[name] = (0..<shape.reduce(1, *)).map { _ in rng.uniform(-bound, bound) }
    }
  }

  public init(names: [String], shapes: [String: [Int]], values: [String: [Float]]) {
    self.names = names
    self.shapes = shapes
    self.values = values
  }

  public var count: Int { names.reduce(0) { $0 + (values[$1]?.count ?? 0) } }
}
