import GraphIR
import Passes

/// What evaluation and prediction need from a back end: parameters in, the graph's output out.
public protocol InferenceBackend {
  /// Short name for reports (`interp`, `swift`, `jit`).
  var name: String { get }
  /// Sets the parameters and buffers (trained weights).
  mutating func loadParameters(_ parameters: Parameters) throws
  /// The graph's output for `count` images (inference: dropout is the identity).
  mutating func infer(images: [Float], count: Int) throws -> [Float]
}

/// What the trainer needs from a back end. The back end owns the parameters and optimiser state
/// while it trains, so a step copies nothing but the batch in and the loss and logits out.
public protocol Backend: InferenceBackend, SendableMetatype {
  /// Sets parameters and optimiser state (a fresh run or a resumed checkpoint).
  mutating func load(_ parameters: Parameters, _ optimizer: Optimizer) throws
  /// Forward, backward and the optimiser update on one batch; `step` is the 1-based update count
  /// (it keys dropout and Adam's bias correction). Returns the loss and the logits.
  mutating func trainStep(images: [Float], labels: [Int32], seed: UInt64, step: Int, learningRate: Float) throws
    -> (loss: Float, logits: [Float])
  /// Current parameters and optimiser state, for checkpoints.
  func parameters() -> Parameters
  func optimizerState() -> [String: [Float]]
}

/// The reference interpreter as a back end: Float kernels, a shape table per batch size.
public struct InterpreterBackend: Backend {
  public let name = "interp"
  let forward: Graph
  /// The pipeline's stages the interpreter runs, by batch: the backward graph (unfused: the reference computes
  /// the ops as written) and the inference graph (pruned to the output).
  var training: [Int: TypedGraph] = [:]
  var inference: [Int: TypedGraph] = [:]
  var params: Parameters
  var optimizer: Optimizer
  /// Shards per batch: the compiled back ends' arithmetic (per-shard gradients, dropout keyed per shard,
  /// averaged in shard order), so the reference and the compiled programs train the same function.
  let shards: Int
  /// Whether conv and dense products round their operands to bfloat16 (`--precision bf16`), as a bf16 program's GEMMs do.
  let bf16Products: Bool

  public init(graph: Graph, shards: Int = 1, bf16Products: Bool = false) throws {
    guard shards >= 1 else { throw DataError("--shards must be at least 1, got \(shards)") }
    self.shards = shards
    self.bf16Products = bf16Products
    forward = graph
    params = Parameters(names: [], shapes: [:], values: [:])
    optimizer = Optimizer(kind: .adam, learningRate: 0)
  }

  public mutating func load(_ parameters: Parameters, _ optimizer: Optimizer) {
    params = parameters
    self.optimizer = optimizer
  }
  public mutating func loadParameters(_ parameters: Parameters) { params = parameters }
  public func parameters() -> Parameters { params }
  public func optimizerState() -> [String: [Float]] { optimizer.state }

  /// The training stage at `batch` (its graph is the forward graph with the backward appended).
  mutating func trainingStage(_ batch: Int) throws -> TypedGraph {
    if let t = training[batch] { return t }
    let t = try Pipeline(batch: batch, purpose: .training, fuse: false).run(forward, to: .grad)
    // The interpreter keeps every value of a step alive.
    let values = t.graph.nodes.reduce(0) { $0 &+ (t.shapes[$1.name]?.count ?? 0) }
    try checkMemory(bytes: values &* 4, what: "interpreting \(forward.name) at batch \(batch)")
    training[batch] = t
    return t
  }

  /// The inference stage at `batch`.
  mutating func inferenceStage(_ batch: Int) throws -> TypedGraph {
    if let t = inference[batch] { return t }
    let t = try Pipeline(batch: batch, purpose: .inference, fuse: false).run(forward, to: .shaped)
    inference[batch] = t
    return t
  }

  func inputs(_ table: ShapeTable, images: [Float], labels: [Int32]?) -> [String: RefValue<Float>] {
    var env: [String: RefValue<Float>] = [:]
    for i in forward.inputs {
      guard let t = table[i.name] else { continue }
      switch i.dtype {
      case .f32: env[i.name] = .f32(Tensor(shape: t.dims, data: images))
      case .i32: env[i.name] = .i32(shape: t.dims, data: labels ?? [Int32](repeating: 0, count: t.count))
      }
    }
    return env
  }

  public mutating func trainStep(images: [Float], labels: [Int32], seed: UInt64, step: Int, learningRate: Float) throws
    -> (loss: Float, logits: [Float]) {
    guard labels.count % shards == 0, images.count % labels.count == 0 else {
      throw DataError("a batch of \(labels.count) does not split into \(shards) equal shards")
    }
    let b = labels.count / shards, px = images.count / labels.count
    let stage = try trainingStage(b)
    let (backward, table) = (stage.graph, stage.shapes)
    let weights = params.tensors()
    var grads: [String: [Float]] = [:]
    var loss: Float = 0
    var logits: [Float] = []
    // The frozen part of a fine-tuning step keeps its running statistics (`Graph.evaluationNodes`).
    let evaluation = forward.evaluationNodes
    let stateful = forward.nodes.filter { $0.op.definition is any StatefulOp && !evaluation.contains($0.name) }
    var statistics = [[[[Float]]]](repeating: [], count: stateful.count)
    for s in 0..<shards {
      let ctx = ReferenceContext(training: true, seed: UInt64(bitPattern: shardSeed(seed, s)), step: UInt64(step), bf16Products: bf16Products)
      let env = try Interpreter<Float>(graph: backward, shapes: table)
        .run(inputs: inputs(table, images: Array(images[(s * b * px)..<((s + 1) * b * px)]), labels: Array(labels[(s * b)..<((s + 1) * b)])),
             parameters: weights, context: ctx)
      for d in backward.gradients {
        let g = env[d.value]!.tensor!.data
        grads[d.parameter] = grads[d.parameter].map { zip($0, g).map(+) } ?? g
      }
      for (k, n) in stateful.enumerated() {
        statistics[k].append(n.op.secondaryOutputs.map { env["\(n.name).\($0)"]!.tensor!.data })
      }
      loss += env[backward.minimize!]!.tensor!.data[0]
      logits += env[backward.output!]!.tensor!.data
    }
    if shards > 1 {
      // Summed in shard order, then scaled: the compiled back ends' reduction.
      let scale = 1 / Float(shards)
      grads = grads.mapValues { $0.map { $0 * scale } }
    }
    optimizer.step = step - 1
    optimizer.learningRate = learningRate
    optimizer.update(&params, gradients: grads)
    for (k, n) in stateful.enumerated() {
      params.update(n, shardStatistics: statistics[k], elementsPerShard: (n.op.definition as! any StatefulOp).elementsPerStatistic(n.args.map { table[$0]! }))
    }
    return (loss / Float(shards), logits)
  }

  public mutating func infer(images: [Float], count: Int) throws -> [Float] {
    let stage = try inferenceStage(count)
    let table = stage.shapes
    let env = try Interpreter<Float>(graph: stage.graph, shapes: table)
      .run(inputs: inputs(table, images: images, labels: nil), parameters: params.tensors(), context: ReferenceContext(training: false, bf16Products: bf16Products))
    return env[forward.output!]!.tensor!.data
  }
}
