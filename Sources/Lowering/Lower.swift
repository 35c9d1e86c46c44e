import GraphIR
import Passes

/// The optimiser a training program applies after its backward pass (hyper-parameters are baked in;
/// the learning rate and step are arguments).
public struct OptimizerSpec: Equatable, Sendable {
  public enum Kind: String, Sendable, CaseIterable { case adam, sgd }
  public var kind: Kind
  public var beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8
  public var momentum: Float = 0, weightDecay: Float = 0
  /// Per parameter, its learning rate over the step's (`lr` argument): a parameter group's own rate, as
  /// fine-tuning's `--head-lr` gives the classifier. Absent: 1.
  public var rateScales: [String: Float] = [:]
  public init(kind: Kind, momentum: Float = 0, weightDecay: Float = 0, rateScales: [String: Float] = [:]) {
    self.kind = kind
    self.momentum = momentum
    self.weightDecay = weightDecay
    self.rateScales = rateScales
  }
}

/// What to lower: a training step (forward, backward, optimiser), the gradients of one shard of a
/// batch (forward and backward only; the runtime reduces shards and runs `lowerOptimizer`), or inference.
public enum LoweringMode: Equatable, Sendable {
  case train(OptimizerSpec)
  case gradients
  case infer

  /// How the entry point's name says what it computes (after the graph's name, before the batch).
  var functionPrefix: String {
    switch self {
    case .train: "train"
    case .gradients: "grad"
    case .infer: "infer"
    }
  }
}

/// Lowers a graph to the backend-neutral kernel program at a fixed batch size.
///
/// Training: differentiate, fuse, plan memory, then emit each node's kernel in order, then the
/// optimiser over all parameters. Inference: the forward nodes that feed the output, fused. Kernels of
/// equal code share one function (`shareIdenticalKernels`) unless `share` is false.
public func lower(_ graph: Graph, batch: Int, mode: LoweringMode, target: Target, fuse: Bool = true, profile: Bool = false,
                  share: Bool = true) throws(DiagnosticList) -> Program {
  try checkEntryInputs(graph)
  let pipeline = Pipeline(batch: batch, purpose: mode == .infer ? .inference : .training, fuse: fuse)
  let (g, shapes) = try { () throws(DiagnosticList) in
    let t = try pipeline.run(graph, to: .fused)
    return (t.graph, t.shapes)
  }()
  let training = mode != .infer
  let kernels = try g.nodes.map { n throws(DiagnosticList) in try lowering(of: n) }
  let evaluation = training ? g.evaluationNodes : []
  let refused = zip(g.nodes, kernels).compactMap { n, k in k.check(n, shapes, training: training && !evaluation.contains(n.name)).map { Diagnostic.error($0, at: n.opRange) } }
  if !refused.isEmpty { throw DiagnosticList(refused) }
  var scratch: [String: Int] = [:]
  for (n, k) in zip(g.nodes, kernels) { scratch[n.name] = k.scratchFloats(n, shapes, target, training: training && !evaluation.contains(n.name)) }
  // The state's layout is the source graph's: the same for every program of the model, whatever its passes did.
  let state = pipeline.purpose == .inference ? prunedToOutput(graph) : graph
  var plan = planMemory(g, shapes, scratch: scratch, training: training, state: state)
  var regions: [(name: String, op: String, line: Int)] = []
  var e = Emitter(graph: g, shapes: shapes, plan: plan, training: training, target: target, splitsKernels: mode != .gradients)
  for (n, kernel) in zip(g.nodes, kernels) {
    e.node = n.name
    e.training = e.trains(n)
    if profile {
      e.body.append(.tick(regions.count))
      regions.append((n.name, n.op.spelling, n.range.line))
    }
    e.kernel(n.name, "\(n.name) = \(n.op.spelling)(\(n.args.joined(separator: ", ")))") { e in e.emit(n, kernel) }
  }
  e.training = training
  if case .train(let spec) = mode {
    if profile {
      e.body.append(.tick(regions.count))
      regions.append((spec.kind.rawValue, "optimizer", 0))
    }
    e.emitOptimizerKernel(spec)
  }
  e.placePrepare()
  plan.arenaFloats += e.tailFloats
  // Profiling keeps one 64-bit timestamp per kernel boundary after that.
  let profileOffset = plan.arenaFloats
  if profile {
    e.body.append(.tick(regions.count))
    plan.arenaFloats += 2 * (regions.count + 1)
  }
  let out = plan.placements[g.output!]!, outType = shapes[g.output!]!
  var program = Program(
    graphName: g.name, batch: batch, functions: [Function(name: "\(g.name)_\(mode.functionPrefix)_b\(batch)", body: e.body)],
    arenaFloats: plan.arenaFloats, preparedFloats: e.preparedFloats,
    parameters: state.parameterNames.map { ($0, shapes[$0]!.dims, plan.placements[$0]!.offset) },
    parameterFloats: plan.parameterFloats, imageFloats: shapes[g.inputs.first { $0.dtype == .f32 }!.name]!.count,
    output: out, loss: g.minimize.flatMap { plan.placements[$0] }, classes: outType.dims.last ?? 1,
    profile: regions, profileOffset: profileOffset, target: target, gemms: e.gemms, convs: e.convs, splits: e.splits,
    channelsLast: g.nodes.map(\.name).filter(e.channelsLast.contains))
  program.layOutBuffers(state, shapes, plan)
  if training { program.statistics = batchStatistics(g, shapes, plan) }
  return share ? shareIdenticalKernels(program) : program
}

/// Where each stateful op of a training program leaves its batch statistics, and the buffers they update.
func batchStatistics(_ g: Graph, _ shapes: ShapeTable, _ plan: MemoryPlan) -> [BatchStatistics] {
  let evaluation = g.evaluationNodes
  return g.nodes.filter { !evaluation.contains($0.name) }.compactMap { n in
    (n.op.definition as? any StatefulOp).map { op in
      BatchStatistics(node: n.name, values: n.op.secondaryOutputs.map { plan.placements["\(n.name).\($0)"]! }, names: n.op.secondaryOutputs,
                      buffers: n.op.bufferSuffixes.map { plan.placements["\(n.name).\($0)"]! },
                      elements: op.elementsPerStatistic(n.args.map { shapes[$0]! }))
    }
  }
}

extension Program {
  /// Records where the plan put the graph's buffers.
  mutating func layOutBuffers(_ g: Graph, _ shapes: ShapeTable, _ plan: MemoryPlan) {
    buffers = g.bufferNames.map { ($0, shapes[$0]!.dims, plan.placements[$0]!.offset) }
    bufferFloats = plan.bufferFloats
  }
}

/// A compiled entry point takes one image buffer and one label buffer, so a graph has exactly one f32
/// input (the images) and at most one i32 input (the labels); more would silently share one buffer.
func checkEntryInputs(_ g: Graph) throws(DiagnosticList) {
  let images = g.inputs.filter { $0.dtype == .f32 }, labels = g.inputs.filter { $0.dtype == .i32 }
  var errors: [Diagnostic] = []
  if images.isEmpty {
    errors.append(.error("the graph has no f32 input; a compiled graph reads one image input such as 'input image: f32[N, 1, 28, 28]'", at: .synthesized))
  }
  for extra in images.dropFirst() {
    errors.append(.error("second f32 input '\(extra.name)': a compiled graph reads exactly one image input ('\(images[0].name)')", at: extra.range))
  }
  for extra in labels.dropFirst() {
    errors.append(.error("second i32 input '\(extra.name)': a compiled graph reads at most one label input ('\(labels[0].name)')", at: extra.range))
  }
  for i in g.inputs where i.dims.first != .batch {
    errors.append(.error("input '\(i.name)' must have the batch dimension N first: the compiled programs split and stream batches along it", at: i.range))
  }
  if !errors.isEmpty { throw DiagnosticList(errors) }
}

/// The optimiser alone, over the parameter layout of `graph` (for sharded training steps).
public func lowerOptimizer(_ graph: Graph, _ spec: OptimizerSpec, target: Target) throws(DiagnosticList) -> Program {
  let shapes = try inferShapes(graph, batch: 1)
  let stateful = Graph(name: graph.name, nodes: graph.nodes.filter { !$0.op.parameterSuffixes.isEmpty || !$0.op.bufferSuffixes.isEmpty })
  let plan = planMemory(stateful, shapes, scratch: [:], training: false)
  var e = Emitter(graph: graph, shapes: shapes, plan: plan, training: true, target: target, splitsKernels: false)
  e.kernel(spec.kind.rawValue) { e in e.emitOptimizer(spec) }
  var program = Program(
    graphName: graph.name, batch: 0, functions: [Function(name: "\(graph.name)_\(spec.kind.rawValue)", body: e.body)],
    arenaFloats: 16, parameters: graph.parameterNames.map { ($0, shapes[$0]!.dims, plan.placements[$0]!.offset) },
    parameterFloats: plan.parameterFloats, imageFloats: 0, output: Placement(base: .arena, offset: 0, count: 0), loss: nil, classes: 0,
    target: target)
  program.layOutBuffers(graph, shapes, plan)
  return program
}

/// Emits statements for nodes, resolving names to placements.
struct Emitter {
  let graph: Graph
  let shapes: ShapeTable
  let plan: MemoryPlan
  /// Whether the program is a training step (or a shard's gradients).
  let trainingProgram: Bool
  /// Whether large kernels split into `parallel` parts: not in a shard's gradient program (or the optimiser run
  /// after the shards), whose shards are already the threads. A one-shard training step splits as inference does.
  let splitsKernels: Bool
  /// Whether the node being emitted trains: a training program's node outside its frozen part. A frozen node
  /// (`evaluation`) is lowered as inference lowers it (the kernels' choices, what they prepare once from the
  /// weights), since nothing reads its saved values or differentiates it.
  var training: Bool
  /// The nodes of a training program that run as in evaluation: a fine-tuning step's frozen part (`Graph.evaluationNodes`).
  let evaluation: Set<String>
  let target: Target
  /// Whether node `n` runs in training mode (batch statistics, dropout): a training program's, outside its frozen part.
  func trains(_ n: Node) -> Bool { trainingProgram && !evaluation.contains(n.name) }
  /// f32 lanes of the target's vectors: the width of every vector statement.
  var lanes: Int { target.lanes }
  var body: [Stmt] = []
  /// The `.graph` statement being emitted, and the GEMM blockings chosen so far.
  var node = ""
  var gemms: [GemmChoice] = []
  var convs: [ConvChoice] = []
  var splits: [ParallelSplit] = []
  /// The values this program keeps channels-last (`chooseChannelsLast`: at inference, or in a training program's
  /// frozen part); the others are NCHW.
  var channelsLast: Set<String>
  /// Whether a kernel whose result shares its first operand's layout (a pool, a depthwise conv) runs channels-last:
  /// its result is, or it is neutral (one pixel, [N, C, 1, 1], the same bytes in both layouts) and the operand is.
  func sharesChannelsLast(_ n: Node) -> Bool { channelsLast.contains(n.name) || channelsLast.contains(n.args[0]) }
  /// Statements an inference program skips when the caller says they already ran into its prepared buffer for
  /// these weights (step 1): what it derives from the weights (Winograd's transformed kernels) once instead of
  /// on every call, into the `preparedFloats` floats of `Base.prepared`.
  var prepare: [Stmt] = []
  private(set) var preparedFloats = 0
  private var counter = 0
  /// Where scratch that kernels take while they are emitted (`tailScratch`) begins: after the planned arena.
  let tailBase: Int
  /// The arena floats after `tailBase` the program needs for it: the most any one kernel takes.
  private(set) var tailFloats = 0
  /// The tail scratch the kernel being emitted has taken so far.
  private var kernelTail = 0
  /// The part of a `parallel` statement being emitted (its index) and how many parts there are, or nil.
  private var part: (index: IExpr, count: Int)?

  init(graph: Graph, shapes: ShapeTable, plan: MemoryPlan, training: Bool, target: Target, splitsKernels: Bool) {
    self.graph = graph
    self.splitsKernels = splitsKernels
    self.shapes = shapes
    self.plan = plan
    self.training = training
    trainingProgram = training
    evaluation = training ? graph.evaluationNodes : []
    self.target = target
    tailBase = plan.arenaFloats
    // A training program's trained nodes and backward read and write NCHW; its frozen part runs as inference does.
    channelsLast = training ? (evaluation.isEmpty ? [] : chooseChannelsLast(graph, shapes, target: target, within: evaluation))
      : chooseChannelsLast(graph, shapes, target: target)
  }

  /// The optimiser's kernel. A step that prepares (its frozen part's transformed weights) is first called with step
  /// 0 to fill its prepared buffer; that call's gradients are thrown away, so it updates nothing.
  mutating func emitOptimizerKernel(_ spec: OptimizerSpec) {
    kernel(spec.kind.rawValue) { e in
      e.emitOptimizer(spec)
      if !e.prepare.isEmpty { e.body = [.when(.ilt(.c(0), .step), e.body)] }
    }
  }

  /// Puts what the program prepares from the weights (`prepare`) first, into the prepared buffer, unless the
  /// caller says that buffer already holds it for these weights (step 1): a caller that knows nothing of it
  /// (step 0) gets a correct call.
  mutating func placePrepare() {
    if !prepare.isEmpty { body.insert(.when(.uge(.c(0), .step), [.kernel("prepare", prepare)]), at: 0) }
  }

  /// Room for `count` floats in the prepared buffer (`Base.prepared`), which `prepare` writes and the program's
  /// calls then read: its offset there.
  mutating func prepared(_ count: Int) -> Int {
    defer { preparedFloats += count }
    return preparedFloats
  }

  /// A fresh loop variable name.
  mutating func fresh(_ hint: String) -> String {
    counter += 1
    return "\(hint)\(counter)"
  }

  func at(_ value: String) -> Placement { plan.placements[value]! }
  func dims(_ value: String) -> [Int] { shapes[value]!.dims }

  /// `for v in 0..<n { body(v) }` with a fresh variable.
  mutating func loop(_ hint: String, _ n: Int, _ body: (inout Emitter, IExpr) -> [Stmt]) -> Stmt {
    let v = fresh(hint)
    return .loop(v, n, body(&self, .v(v)))
  }

  /// `body(first, lanes)` over the `count` positions from `from` (channels, or a row) in vectors: the full
  /// vectors in a loop, then the masked rest.
  mutating func vectorRuns(_ count: Int, from: IExpr = .c(0), _ body: (inout Emitter, IExpr, Int) -> [Stmt]) -> [Stmt] {
    let lanes = self.lanes, full = count / lanes, rest = count % lanes
    var out: [Stmt] = []
    if full > 0 { out.append(loop("cv", full) { e, v in body(&e, from + v * lanes, lanes) }) }
    if rest > 0 { out += body(&self, from + full * lanes, rest) }
    return out
  }

  /// `body(k)` for k in 0..<n as straight-line code when n is small (pool windows, kernel rows),
  /// so the back ends need no loop unrolling of their own; a loop otherwise.
  mutating func small(_ hint: String, _ n: Int, _ body: (inout Emitter, IExpr) -> [Stmt]) -> [Stmt] {
    guard n <= 4 else { return [loop(hint, n, body)] }
    var out: [Stmt] = []
    for k in 0..<n { out += body(&self, .c(k)) }
    return out
  }

  /// The equal parts a layer of `macs` multiply-adds splits into over `units` independent units (vectors
  /// of output channels, groups of dense units): the most parts, up to the target's, that divide `units`
  /// (any count, without units); one in a program that does not split (`splitsKernels`) or below `Target.parallelWorkBelow`.
  /// The parts are fixed by the target, so the threads that run them change nothing in the arithmetic.
  func parallelParts(units: Int? = nil, macs: Int) -> Int {
    guard splitsKernels, macs >= Target.parallelWorkBelow else { return 1 }
    guard let units else { return target.parallelParts }
    guard units > 1 else { return 1 }
    return (1...min(target.parallelParts, units)).last { units % $0 == 0 }!
  }

  /// `body(part)` for each of `parts` parts (of `what`) as one `parallel` statement, or inline as part 0
  /// when there is one.
  mutating func inParts(_ parts: Int, of what: String, _ body: (inout Emitter, IExpr) -> [Stmt]) -> [Stmt] {
    guard parts > 1 else { return body(&self, .c(0)) }
    if !splits.contains(where: { $0.node == node }) { splits.append(ParallelSplit(node: node, parts: parts, by: what)) }
    let v = fresh("part"), outer = part
    part = (.v(v), parts)
    defer { part = outer }
    return [.parallel(v, parts, body(&self, .v(v)))]
  }

  /// `body(first, count)` for this part's share of 0..<total when split evenly into `parts` (`part` of them), the
  /// remainder to the last part: consecutive elements (pixels, rows) per core, as the layers around it split them.
  mutating func evenShare(_ total: Int, parts: Int, part: IExpr, _ body: (inout Emitter, IExpr, Int) -> [Stmt]) -> [Stmt] {
    let per = total / parts, more = total % parts
    var out = per > 0 ? body(&self, part * per, per) : []
    if more > 0 { out.append(.when(.ieq(part, .c(parts - 1)), body(&self, .c(parts * per), more))) }
    return out
  }

  /// `floats` of arena scratch, after the planned arena, for code the kernel being emitted runs before its next
  /// statement needs it again (a bf16 GEMM's packed operands): each part of a `parallel` statement its own. Kernels
  /// run one after another, so every kernel's tail starts at `tailBase`.
  mutating func tailScratch(_ floats: Int) -> IExpr {
    let start = IExpr.c(tailBase + kernelTail)
    kernelTail += floats * (part?.count ?? 1)
    tailFloats = max(tailFloats, kernelTail)
    return part.map { start + $0.index * floats } ?? start
  }

  /// A flat elementwise loop over `count` elements.
  mutating func elementwise(_ count: Int, _ body: (IExpr) -> Stmt) -> Stmt { loop("i", count) { _, i in [body(i)] } }

  /// Zeroes `count` floats of a placement.
  mutating func zero(_ p: Placement, from: IExpr = .c(0), count: Int? = nil) -> Stmt {
    let base = p.base, off = p.offset
    return elementwise(count ?? p.count) { i in .store(base, from + off + i, .c(0)) }
  }

  /// Zeroes `count` floats of the arena at `offset` (a padded buffer's border, once per kernel).
  mutating func zeroArena(_ offset: Int, _ count: Int) -> Stmt { elementwise(count) { i in .store(.arena, .c(offset) + i, .c(0)) } }

  mutating func emit(_ n: Node, _ kernel: any Lowerable) { kernel.lower(n, &self) }

  /// Appends what `emit` appends as one named `.kernel` statement, headed by `comment` when given.
  mutating func kernel(_ name: String, _ comment: String? = nil, _ emit: (inout Emitter) -> Void) {
    // Swapped, not copied: the program's body keeps one buffer, so emitting n kernels stays linear in n.
    var inner: [Stmt] = comment.map { [.comment($0)] } ?? []
    swap(&body, &inner)
    kernelTail = 0
    emit(&self)
    swap(&body, &inner)
    if !inner.isEmpty { body.append(.kernel(name, inner)) }
  }
}
