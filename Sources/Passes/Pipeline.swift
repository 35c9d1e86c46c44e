import GraphIR

/// A graph with the types of all its values at one batch size: what each stage of the pipeline returns.
public struct TypedGraph: Equatable, Sendable {
  public var graph: Graph
  public var shapes: ShapeTable
  public init(graph: Graph, shapes: ShapeTable) {
    self.graph = graph
    self.shapes = shapes
  }
}

/// The front end's stages, in order; `dump-ir --stage` names them so.
public enum Stage: String, CaseIterable, Comparable, Sendable {
  /// Types inferred (for inference, after pruning to the output).
  case shaped
  /// The backward graph appended (training only; inference stays as shaped).
  case grad
  /// conv+relu+maxpool and friends fused (see `fuseConvReLUPool`); in inference, batch norms first
  /// folded into the conv or dense before them (see `foldBatchNorm`), and activations and residual adds
  /// after into the conv's epilogue (see `fuseConvEpilogues`).
  case fused

  public static func < (a: Stage, b: Stage) -> Bool { allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)! }
}

/// The sequence of passes every command runs, to the stage it needs: each stage a pure function of the
/// previous one, and each value's shape rule applied once (the backward graph reuses the forward types).
public struct Pipeline: Sendable {
  /// What the graph is compiled for.
  public enum Purpose: Sendable {
    /// A training step: the graph is differentiated.
    case training
    /// Inference: only the nodes that feed the output, without the loss.
    case inference
  }

  public var batch: Int
  public var purpose: Purpose
  /// Whether the `fused` stage fuses and folds (off: it returns the grad stage unchanged, for comparisons).
  public var fuse: Bool

  public init(batch: Int, purpose: Purpose, fuse: Bool = true) {
    self.batch = batch
    self.purpose = purpose
    self.fuse = fuse
  }

  /// Runs the stages up to and including `last`.
  public func run(_ graph: Graph, to last: Stage) throws(DiagnosticList) -> TypedGraph {
    let source = purpose == .inference ? prunedToOutput(graph) : graph
    var t = TypedGraph(graph: source, shapes: try inferShapes(source, batch: batch))
    if last >= .grad, purpose == .training {
      try refuseQuantized(t.graph)
      let g = try differentiate(t.graph)
      t = TypedGraph(graph: g, shapes: try inferShapes(g, batch: batch, known: t.shapes))
    }
    if last >= .fused, fuse {
      // A training step's frozen part (`Graph.evaluationNodes`) runs as inference does, so it is fused as inference is.
      let evaluation = purpose == .inference ? nil : t.graph.evaluationNodes
      if evaluation?.isEmpty != true {
        let g = foldBatchNorm(t.graph, within: evaluation)
        t = TypedGraph(graph: g, shapes: try inferShapes(g, batch: batch))
      }
      // Fusion renames and retypes nodes (a fused conv takes its pool's shape), so its types are inferred anew.
      // Epilogues first, on the shapes they were inferred with (they leave conv + relu alone, for the pool fusion).
      let epilogues = evaluation?.isEmpty != true ? fuseConvEpilogues(t.graph, shapes: t.shapes, within: evaluation) : t.graph
      let g = fuseConvReLUPool(epilogues, shapes: t.shapes)
      t = TypedGraph(graph: g, shapes: try inferShapes(g, batch: batch))
    }
    return t
  }
}

/// A graph with int8 convs is for inference: their rounding to steps has no gradient.
func refuseQuantized(_ graph: Graph) throws(DiagnosticList) {
  let quantized = graph.int8Nodes
  guard quantized.isEmpty else {
    throw DiagnosticList(quantized.map {
      .error("'\($0.name)' is an int8 layer (input_scale), which runs at inference only; train the f32 graph, then quantize it (cnnc quantize)", at: $0.opRange)
    })
  }
}

/// The nodes that feed the graph's output, without the loss (what inference runs).
public func prunedToOutput(_ graph: Graph) -> Graph {
  guard let output = graph.output else { return graph }
  var needed: Set<String> = [output]
  for n in graph.nodes.reversed() where needed.contains(n.name) { needed.formUnion(n.args) }
  var g = graph
  g.nodes = graph.nodes.filter { needed.contains($0.name) }
  g.minimize = nil
  return g
}
