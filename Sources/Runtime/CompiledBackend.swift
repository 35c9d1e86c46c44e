import COpenBLAS
import CSpin
import Dispatch
import Foundation
import GraphIR
import Lowering

/// Owned, 64-byte-aligned float storage, zeroed; freed in `deinit`.
final class FloatBuffer {
  let pointer: UnsafeMutablePointer<Float>
  let count: Int
  /// What `calloc` returned (`pointer` is its first 64-byte boundary).
  private let allocation: UnsafeMutableRawPointer
  /// Zeroed by `calloc`, whose large blocks are fresh pages the kernel zeroes on first touch: a buffer takes resident
  /// memory only as it is written (an inference program's prepared buffer at another batch, never), where zeroing it
  /// here would make all of it resident at once.
  init(_ count: Int) {
    self.count = max(count, 1)
    guard let raw = calloc(self.count * MemoryLayout<Float>.size + Self.alignment, 1) else {
      fatalError("out of memory allocating \(self.count) floats")
    }
    allocation = raw
    let aligned = (Int(bitPattern: raw) + Self.alignment - 1) / Self.alignment * Self.alignment
    pointer = UnsafeMutablePointer(bitPattern: aligned)!
  }
  deinit { free(allocation) }
  /// Vector loads of every width the targets have stay within one cache line.
  static let alignment = 64
}

/// A back end that runs compiled programs: the train step at the training batch, and the inference
/// programs for the image counts the command declared (`inferenceCalls`), all lowered before the first
/// step. The train step is compiled before it, the inference programs meanwhile on a thread of their own
/// (the first evaluation waits for them), so the first step starts after the training code alone is
/// compiled; nothing is lowered or compiled after that. Parameters, gradients and
/// optimiser state live in flat buffers laid out as the programs expect; arenas are allocated once.
///
/// With `shards` S > 1 every batch is split into S fixed shards of B/S images. Each shard runs the
/// gradient program with single-threaded BLAS into its own arena and gradient buffer, on up to
/// `threads` threads; the shard gradients are then averaged in shard order and the optimiser program
/// runs once. The arithmetic depends on S but not on the thread count, so results are bit-identical
/// with 1 or 2 threads. Dropout in shard s is keyed by seed + s * golden ratio (shard 0 uses the seed).
public final class CompiledBackend<C: ProgramCompiler>: Backend {
  public let name: String
  let graph: Graph
  let optimizerSpec: OptimizerSpec
  public private(set) var compiler: C
  let shards: Int
  public let threads: Int
  /// Threads for inference: every core unless `threads` caps them, whatever the shard count (which only
  /// splits training batches). Chunks are dealt in a fixed order, so any count gives the same results.
  public let inferenceThreads: Int
  /// The train step (S = 1) or the per-shard gradient program (S > 1).
  let train: Program
  let trainEntry: EntryPoint
  /// The optimiser program (S > 1 only).
  let update: (Program, EntryPoint)?
  /// The inference programs by batch size; their entry points are `inferenceEntries()`.
  let inference: [Int: Program]
  /// The inference programs' code: compiled with the training step's for an inference-only back end, on
  /// a thread of its own for a training one (the first step does not need it).
  private var compiledInference: [Int: EntryPoint]?
  private let pending: BackgroundCompile<C>?
  /// Workers for the `parallel` statements of single-chunk inference calls (`singleCallPool`).
  private var pool: ThreadPool?
  let params: FloatBuffer, m: FloatBuffer, v: FloatBuffer
  /// The gradients of every shard of the batch, back to back (shard s at s * parameterFloats); after a
  /// step, shard 0's slot holds their average.
  let grads: FloatBuffer
  /// One arena per shard this process runs.
  var arenas: [FloatBuffer]
  /// Bumped whenever the parameters change (a load, a training step): an inference program then prepares what it
  /// derives from the weights (Winograd's transformed kernels) again, on its next call.
  private var parametersVersion = 0
  /// Per inference program (by batch), its prepared buffer (`Base.prepared`), which every arena running it shares,
  /// and the parameters' version it was prepared from (nil: never).
  private var prepared: [Int: (buffer: FloatBuffer, version: Int?)] = [:]
  /// Bumped when weights are loaded: what the training step prepares depends only on frozen parameters, which
  /// only a load changes.
  private var loadVersion = 0
  /// The training step's prepared buffer (its frozen part's transformed weights), which every shard reads, and
  /// the load it was prepared from (nil: never).
  private var stepPrepared: (buffer: FloatBuffer, version: Int?)
  /// Data-parallel training over MPI: this rank runs shards rank*L ..< (rank+1)*L of the S shards.
  let mpi: MPIRuntime?
  var localShards: Int { shards / (mpi?.size ?? 1) }
  var firstShard: Int { (mpi?.rank ?? 0) * localShards }
  /// Gradient pointer of shard s.
  func gradient(_ s: Int) -> UnsafeMutablePointer<Float> { grads.pointer + s * train.parameterFloats }
  /// The parameter floats that train (all but the frozen parameters'), in runs: the shards' gradients are reduced
  /// over these alone (fine-tuning a ResNet-18's head reduces 2,565 floats, not 11 million).
  let trainedFloats: [Range<Int>]
  var optimizerKind: Optimizer.Kind
  var stepsTaken = 0
  /// The op of each of the train program's `statistics`, and the step counters of the graph's stateful ops.
  let statefulOps: [any StatefulOp]
  var counters: [String: Int64]
  /// Arena bytes of one image's inference program.
  let inferenceBytesPerImage: Int
  /// Time spent compiling before the back end can run (lowering plus code generation of the training
  /// step, or of the inference programs of an inference-only back end), reported by the CLI.
  public private(set) var compileSeconds: Double = 0
  /// A training back end's inference programs compile on a thread of their own while training starts:
  /// that compile's wall time once it is done, nil before (and for an inference-only back end).
  public var backgroundCompileSeconds: Double? { pending?.seconds }
  /// Profiling totals: timestamp units per region (shard 0), wall seconds of the steps, steps.
  var profileTicks: [Double] = []
  var profileWall = 0.0
  var profileSteps = 0

  /// `inferenceCalls` are the image counts the command will pass to `infer`; the one program each needs
  /// (`ProgramSet.inferenceBatches`) is compiled with the training step. With no calls declared, a one-image program
  /// is. `profile` times every kernel of every program.
  public init(name: String, graph: Graph, batch: Int, optimizer: Optimizer, compiler: C, inferenceCalls: [Int] = [],
              fuse: Bool = true, shards: Int = 1, threads: Int? = nil, profile: Bool = false, mpi: MPIRuntime? = nil,
              inferenceOnly: Bool = false) throws {
    self.name = name
    self.graph = graph
    self.compiler = compiler
    guard shards >= 1, batch % shards == 0 else { throw DataError("batch \(batch) does not split into \(shards) equal shards") }
    if let mpi, shards % mpi.size != 0 || shards < mpi.size {
      throw DataError("\(mpi.size) MPI ranks need a shard count that is a multiple of \(mpi.size) (--shards); got \(shards)")
    }
    self.mpi = mpi
    self.shards = shards
    let requested = min(threads ?? ProcessInfo.processInfo.activeProcessorCount, ThreadPool.maxThreads)
    self.threads = max(1, min(shards / (mpi?.size ?? 1), requested))
    inferenceThreads = max(1, requested)
    optimizerKind = optimizer.kind
    optimizerSpec = OptimizerSpec(kind: optimizer.kind, momentum: optimizer.momentum, weightDecay: optimizer.weightDecay, rateScales: optimizer.rateScales)
    // Parallelism comes from the shards (and inference chunks), in a fixed partition.
    if shards > 1 || inferenceThreads > 1 { openblas_set_num_threads(1) }
    let start = Date()
    let set = try ProgramSet(graph: graph, batch: batch, shards: shards, optimizer: optimizerSpec, inferenceCalls: inferenceCalls,
                             target: compiler.target, fuse: fuse, profile: profile, inferenceOnly: inferenceOnly)
    for p in set.evaluation where p.batch > 1 {
      try checkMemory(bytes: 4 * (p.arenaFloats * max(shards, inferenceThreads) + p.preparedFloats), what: "inference at batch \(p.batch)")
    }
    inferenceBytesPerImage = set.inferenceBytesPerImage
    // The training step is compiled now; its inference programs, which only evaluation runs, on a thread
    // of their own meanwhile.
    let entries = try self.compiler.compile(set.compiledFirst)
    inference = Dictionary(uniqueKeysWithValues: set.evaluation.map { ($0.batch, $0) })
    prepared = inference.mapValues { (FloatBuffer($0.preparedFloats), nil) }
    if inferenceOnly {
      compiledInference = Dictionary(uniqueKeysWithValues: zip(set.evaluation.map(\.batch), entries))
      pending = nil
    } else {
      pending = BackgroundCompile(set.evaluation, compiler: self.compiler)
    }
    compileSeconds = Date().timeIntervalSince(start)
    // Code generation frees tens of MB in blocks the allocator would keep; the buffers below then come on top of less.
    cnnc_return_freed_memory()
    train = set.step
    trainEntry = entries[0]
    stepPrepared = (FloatBuffer(set.step.preparedFloats), nil)
    update = set.update.map { ($0, entries[1]) }
    statefulOps = set.step.statistics.map { graph.node(named: $0.node)!.op.definition as! any StatefulOp }
    counters = Dictionary(uniqueKeysWithValues: graph.counterNames.map { ($0, 0) })
    trainedFloats = Self.runs(set.step.parameters.filter { !graph.frozen.contains($0.name) }.map { $0.offset..<($0.offset + $0.shape.reduce(1, *)) })
    (params, m, v, grads, arenas) = try Self.buffers(set, shards: shards, localShards: shards / (mpi?.size ?? 1), what: "training \(graph.name) at batch \(batch)")
  }

  /// Shard 0's gradient buffer after it holds the mean of every shard's, summed in shard order (a fixed reduction),
  /// over the trained floats; what the optimiser step reads.
  func averagedGradients() -> UnsafeMutablePointer<Float> {
    let g0 = gradient(0), scale = 1 / Float(shards)
    for run in trainedFloats {
      for s in 1..<shards {
        let gs = gradient(s)
        for i in run { g0[i] += gs[i] }
      }
      for i in run { g0[i] *= scale }
    }
    return g0
  }

  /// `ranges` sorted and neighbours merged.
  static func runs(_ ranges: [Range<Int>]) -> [Range<Int>] {
    ranges.sorted { $0.lowerBound < $1.lowerBound }.reduce(into: []) { out, r in
      if let last = out.last, last.upperBound >= r.lowerBound { out[out.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound) } else { out.append(r) }
    }
  }

  /// A back end that only runs inference: the programs for `inferenceCalls` (image counts per `infer` call),
  /// compiled before it returns, and no training step. Its optimiser settings are never read.
  public convenience init(inferenceOf graph: Graph, compiler: C, inferenceCalls: [Int], threads: Int? = nil, profile: Bool = false) throws {
    try self.init(name: compiler.name, graph: graph, batch: max(1, inferenceCalls.max() ?? 1), optimizer: Optimizer(kind: .adam, learningRate: 0),
                  compiler: compiler, inferenceCalls: inferenceCalls, threads: threads, profile: profile, inferenceOnly: true)
  }

  /// The step's buffers: parameters and buffers, Adam's moments, one gradient block per shard, one arena per
  /// local shard (as large as the largest program's), after checking they fit in memory. A set without a train
  /// step (inference only) gets no moments or gradients: they would triple a large model's resident memory.
  static func buffers(_ set: ProgramSet, shards: Int, localShards local: Int, what: String) throws
    -> (params: FloatBuffer, m: FloatBuffer, v: FloatBuffer, grads: FloatBuffer, arenas: [FloatBuffer]) {
    let floats = set.step.parameterFloats, arena = set.programs.map(\.arenaFloats).max() ?? 16
    let trained = set.step.loss == nil ? 0 : floats
    try checkMemory(bytes: 4 * (floats + trained * (2 + shards) + set.step.bufferFloats + arena * local), what: what)
    return (FloatBuffer(floats + set.step.bufferFloats), FloatBuffer(trained), FloatBuffer(trained), FloatBuffer(trained * shards),
            (0..<local).map { _ in FloatBuffer(arena) })
  }

  /// The pool an inference call that runs one chunk lends its program's `parallel` statements (made at
  /// the first such call, with a worker per inference thread beyond the caller's); nil with one thread.
  func singleCallPool() -> ThreadPool? {
    guard inferenceThreads > 1 else { return nil }
    if pool == nil { pool = ThreadPool(workers: inferenceThreads - 1) }
    return pool
  }

  /// The pool a one-shard training step lends its `parallel` statements (a step of several shards has none:
  /// its shards are the threads, and its program splits nothing).
  func stepPool() -> UnsafeMutableRawPointer? { shards == 1 ? singleCallPool()?.pointer : nil }

  /// A compile still running when the back end goes (a run that ends before its first evaluation, or
  /// fails) is waited for: the process must not exit, and tear down the compiler's global state, under it.
  deinit { pending?.wait() }

  /// The inference programs' entry points by batch, once compiled (waiting for a background compile).
  func inferenceEntries() throws -> [Int: EntryPoint] {
    if let compiledInference { return compiledInference }
    let batches = pending!.programs.map(\.batch)
    let entries = Dictionary(uniqueKeysWithValues: zip(batches, try pending!.entries()))
    compiledInference = entries
    return entries
  }

  /// The inference program batch that `calls` (image counts passed to `infer`) run in: each call splits
  /// into equal chunks of at most `chunk` images (the last padded), so one program serves a call however
  /// its count divides, and calls of one size (an evaluation's batches) share it.
  /// Runs `body(i)` for each of `count` local shards (or inference workers), on up to `threads` threads.
  func forEachShard(_ count: Int, threads: Int? = nil, _ body: (Int) -> Void) {
    if (threads ?? self.threads) == 1 || count == 1 {
      for s in 0..<count { body(s) }
    } else {
      // The shards write disjoint buffers (own arena and gradients) and only read the shared ones.
      withoutActuallyEscaping(body) { escaping in
        let box = UncheckedSendable(value: escaping)
        DispatchQueue.concurrentPerform(iterations: count) { box.value($0) }
      }
    }
  }

  /// Trained parameters and buffers for inference (the optimiser state is left as it is).
  public func loadParameters(_ parameters: Parameters) throws {
    try copyIn(parameters)
  }

  public func load(_ parameters: Parameters, _ optimizer: Optimizer) throws {
    try copyIn(parameters)
    // An inference-only back end has no optimiser state to load.
    for p in train.parameters where train.loss != nil {
      let count = p.shape.reduce(1, *)
      for (buffer, key) in [(m, optimizer.kind == .adam ? "m" : "momentum"), (v, "v")] {
        let state = optimizer.state["\(key).\(p.name)"] ?? [Float](repeating: 0, count: count)
        state.withUnsafeBufferPointer { buffer.pointer.advanced(by: p.offset).update(from: $0.baseAddress!, count: min($0.count, count)) }
      }
    }
    stepsTaken = optimizer.step
  }

  /// Copies parameters, buffers and counters into the programs' layout; a missing or mis-sized one is an error.
  func copyIn(_ parameters: Parameters) throws {
    parametersVersion += 1
    loadVersion += 1
    for p in train.parameters {
      guard let values = parameters.values[p.name], values.count == p.shape.reduce(1, *) else {
        throw CheckpointError("parameter '\(p.name)' is missing or has the wrong size")
      }
      values.withUnsafeBufferPointer { params.pointer.advanced(by: p.offset).update(from: $0.baseAddress!, count: $0.count) }
    }
    for b in train.buffers {
      guard let values = parameters.values[b.name], values.count == b.shape.reduce(1, *) else {
        throw CheckpointError("buffer '\(b.name)' is missing or has the wrong size")
      }
      values.withUnsafeBufferPointer { params.pointer.advanced(by: b.offset).update(from: $0.baseAddress!, count: $0.count) }
    }
    for name in counters.keys { counters[name] = parameters.counters[name] ?? 0 }
  }

  public func parameters() -> Parameters {
    var values: [String: [Float]] = [:], shapes: [String: [Int]] = [:]
    for p in train.parameters + train.buffers {
      let n = p.shape.reduce(1, *)
      values[p.name] = Array(UnsafeBufferPointer(start: params.pointer.advanced(by: p.offset), count: n))
      shapes[p.name] = p.shape
    }
    return Parameters(names: train.parameters.map(\.name), shapes: shapes, values: values, buffers: train.buffers.map(\.name), counters: counters)
  }

  /// The gradients the last train step computed (averaged over shards), by parameter name.
  public func gradients() -> [String: [Float]] {
    guard train.loss != nil else { return [:] }
    return Dictionary(uniqueKeysWithValues: train.parameters.map { p in
      (p.name, Array(UnsafeBufferPointer(start: gradient(0).advanced(by: p.offset), count: p.shape.reduce(1, *))))
    })
  }

  public func optimizerState() -> [String: [Float]] {
    guard stepsTaken > 0 else { return [:] }
    var state: [String: [Float]] = [:]
    for p in train.parameters {
      let n = p.shape.reduce(1, *)
      func slice(_ b: FloatBuffer) -> [Float] { Array(UnsafeBufferPointer(start: b.pointer.advanced(by: p.offset), count: n)) }
      switch optimizerKind {
      case .adam:
        state["m.\(p.name)"] = slice(m)
        state["v.\(p.name)"] = slice(v)
      case .sgd:
        if optimizerSpec.momentum != 0 { state["momentum.\(p.name)"] = slice(m) }
      }
    }
    return state
  }


  /// The training step's prepared buffer, filled for the weights loaded last: once per load, a call with step 0 on
  /// the first shard's images prepares it (and computes a step nobody reads, which updates nothing).
  func prepareStep(images: UnsafePointer<Float>, labels: UnsafePointer<Int32>) -> UnsafeMutablePointer<Float> {
    if train.preparedFloats > 0, stepPrepared.version != loadVersion {
      trainEntry(params.pointer, gradient(firstShard), m.pointer, v.pointer, arenas[0].pointer, stepPrepared.buffer.pointer, images, labels, 0, 0, 0, stepPool())
      stepPrepared.version = loadVersion
    }
    return stepPrepared.buffer.pointer
  }

  public func trainStep(images: [Float], labels: [Int32], seed: UInt64, step: Int, learningRate: Float) throws -> (loss: Float, logits: [Float]) {
    guard train.loss != nil else { throw DataError("this back end was compiled for inference only") }
    guard images.count == train.imageFloats * shards, labels.count == train.batch * shards else {
      throw DataError("the compiled train step takes \(train.batch * shards) images of \(train.imageFloats / max(1, train.batch)) values and as many labels; got \(images.count) values and \(labels.count) labels")
    }
    parametersVersion += 1  // new weights: inference prepares again
    let (px, b, n, local, first) = (train.imageFloats, train.batch, train.parameterFloats, localShards, firstShard)
    let started = Date()
    images.withUnsafeBufferPointer { img in
      labels.withUnsafeBufferPointer { lab in
        let ready = prepareStep(images: img.baseAddress! + first * px, labels: lab.baseAddress! + first * b)
        let pool = stepPool()
        forEachShard(local) { i in
          let s = first + i
          trainEntry(params.pointer, gradient(s), m.pointer, v.pointer, arenas[i].pointer, ready, img.baseAddress! + s * px,
                     lab.baseAddress! + s * b, learningRate, Int64(step), shardSeed(seed, s), pool)
        }
      }
    }
    // Each shard's loss, logits and batch statistics: [loss, logits..., statistics...] per shard, in shard order.
    let statisticsFloats = train.statistics.flatMap(\.values).map(\.count)
    let statsSize = 1 + train.output.count + statisticsFloats.reduce(0, +)
    var stats = [Float](repeating: 0, count: statsSize * shards)
    for i in 0..<local {
      stats[(first + i) * statsSize] = arenas[i].pointer[train.loss!.offset]
      for k in 0..<train.output.count { stats[(first + i) * statsSize + 1 + k] = arenas[i].pointer[train.output.offset + k] }
      var at = (first + i) * statsSize + 1 + train.output.count
      for p in train.statistics.flatMap(\.values) {
        for k in 0..<p.count { stats[at + k] = arenas[i].pointer[p.offset + k] }
        at += p.count
      }
    }
    if let mpi {
      // Every rank receives every shard's gradients and stats, so all ranks reduce identically.
      let sendGrads = Array(UnsafeBufferPointer(start: gradient(first), count: local * n))
      try sendGrads.withUnsafeBufferPointer { try mpi.allgather($0.baseAddress!, count: local * n, into: grads.pointer) }
      let sendStats = Array(stats[(first * statsSize)..<((first + local) * statsSize)])
      try stats.withUnsafeMutableBufferPointer { all in
        try sendStats.withUnsafeBufferPointer { try mpi.allgather($0.baseAddress!, count: local * statsSize, into: all.baseAddress!) }
      }
    }
    if let (_, entry) = update {
      let g0 = averagedGradients()
      entry(params.pointer, g0, m.pointer, v.pointer, arenas[0].pointer, nil, nil, nil, learningRate, Int64(step), 0, nil)
    }
    foldStatistics(stats, statsSize: statsSize)
    stepsTaken = step
    if !train.profile.isEmpty { recordProfile(wall: Date().timeIntervalSince(started)) }
    var loss: Float = 0
    var logits: [Float] = []
    for s in 0..<shards {
      loss += stats[s * statsSize]
      logits += stats[(s * statsSize + 1)..<(s * statsSize + 1 + train.output.count)]
    }
    return (loss / Float(shards), logits)
  }

  /// Folds every shard's batch statistics (laid out after the loss and logits in `stats`) into the buffers,
  /// on every rank alike, and counts the step.
  func foldStatistics(_ stats: [Float], statsSize: Int) {
    var at = 1 + train.output.count
    for (entry, op) in zip(train.statistics, statefulOps) {
      let perShard = (0..<shards).map { s in
        var offset = s * statsSize + at
        return entry.values.map { p in
          defer { offset += p.count }
          return Array(stats[offset..<(offset + p.count)])
        }
      }
      at += entry.values.reduce(0) { $0 + $1.count }
      let current = entry.buffers.map { Array(UnsafeBufferPointer(start: params.pointer + $0.offset, count: $0.count)) }
      for (p, v) in zip(entry.buffers, op.updatedBuffers(current, shardStatistics: perShard, elementsPerShard: entry.elements)) {
        v.withUnsafeBufferPointer { (params.pointer + p.offset).update(from: $0.baseAddress!, count: p.count) }
      }
      op.countStep(&counters, node: entry.node)
    }
  }

  /// Under MPI: checks that every rank holds the same parameters (FNV-1a of their bytes) and returns
  /// the hash; throws if any rank differs.
  public func checkRanksAgree() throws -> UInt64? {
    guard let mpi else { return nil }
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    let bytes = UnsafeRawBufferPointer(start: params.pointer, count: 4 * (train.parameterFloats + train.bufferFloats))
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    // The hash travels as two floats' worth of bits.
    var mine = [Float(bitPattern: UInt32(truncatingIfNeeded: h)), Float(bitPattern: UInt32(truncatingIfNeeded: h >> 32))]
    var all = [Float](repeating: 0, count: 2 * mpi.size)
    try mine.withUnsafeMutableBufferPointer { m in
      try all.withUnsafeMutableBufferPointer { try mpi.allgather(m.baseAddress!, count: 2, into: $0.baseAddress!) }
    }
    for r in 0..<mpi.size where all[2 * r].bitPattern != mine[0].bitPattern || all[2 * r + 1].bitPattern != mine[1].bitPattern {
      throw DataError("rank \(r) holds different weights from rank \(mpi.rank) after training")
    }
    return h
  }

  /// The timestamp units each kernel of a profiled program took in its last run on `arena`.
  static func kernelTicks(_ p: Program, arena: UnsafeMutablePointer<Float>) -> [Double] {
    let stamps = UnsafeRawPointer(arena + p.profileOffset)
    let t = (0...p.profile.count).map { stamps.load(fromByteOffset: 8 * $0, as: Int64.self) }
    return (0..<p.profile.count).map { Double(t[$0 + 1] &- t[$0]) }
  }

  /// Accumulates the time between shard 0's timestamps of the step just run.
  func recordProfile(wall: Double) {
    let ticks = Self.kernelTicks(train, arena: arenas[0].pointer)
    profileTicks = profileTicks.isEmpty ? ticks : zip(profileTicks, ticks).map(+)
    profileWall += wall
    profileSteps += 1
  }

  /// The algorithm each conv pass of the training step got (or of the inference programs, for an
  /// inference-only back end), by `.graph` statement.
  public var convAlgorithms: [String: ConvChoice] {
    let programs = [train] + inference.values
    return Dictionary(programs.flatMap(\.convs).map { ($0.node, $0) }, uniquingKeysWith: { a, _ in a })
  }

  /// The statements whose values the inference programs keep channels-last (the others are NCHW).
  public var channelsLastValues: Set<String> { Set(inference.values.flatMap(\.channelsLast)) }

  /// Per-kernel time of the gradient (or train) program: (statement, op, `.graph` line, ms per step, share),
  /// with timestamp units converted to seconds by the steps' wall time. Empty unless built with `profile`.

  public func profileReport() -> [(name: String, op: String, line: Int, msPerStep: Double, share: Double)] {
    let total = profileTicks.reduce(0, +)
    guard profileSteps > 0, total > 0 else { return [] }
    let secondsPerTick = profileWall / total
    return zip(train.profile, profileTicks).map { r, ticks in
      (r.name, r.op, r.line, ticks * secondsPerTick / Double(profileSteps) * 1000, ticks / total)
    }
  }

  /// Per-kernel time of one inference call on `count` images, from the inference program at that batch
  /// (built with `profile`) run `repeats` times after an untimed first call: (statement, op, `.graph` line, ms per
  /// call, share).
  public func profileInference(images: [Float], count: Int, repeats: Int) throws
    -> [(name: String, op: String, line: Int, msPerCall: Double, share: Double)] {
    guard let p = inference[count], !p.profile.isEmpty, let entry = try inferenceEntries()[count] else {
      throw DataError("no profiled inference program at batch \(count) was compiled")
    }
    let arena = FloatBuffer(p.arenaFloats), own = FloatBuffer(p.preparedFloats)
    var ticks = [Double](repeating: 0, count: p.profile.count)
    var start = Date()
    images.withUnsafeBufferPointer { img in
      // Its own buffers: prepared by a first call outside the timing, with the arena's pages first touched. Timed
      // with the rest, that call's weight preparation was spread over every kernel (MobileNetV2 int8's profile at
      // two images summed to 5 times its real call).
      for r in 0...repeats {
        entry(params.pointer, nil, nil, nil, arena.pointer, own.pointer, img.baseAddress!, nil, 0, r == 0 ? 0 : 1, 0, singleCallPool()?.pointer)
        if r == 0 { start = Date() } else { ticks = zip(ticks, Self.kernelTicks(p, arena: arena.pointer)).map(+) }
      }
    }
    let wall = Date().timeIntervalSince(start), total = ticks.reduce(0, +)
    guard repeats > 0, total > 0 else { return [] }
    return zip(p.profile, ticks).map { r, t in (r.name, r.op, r.line, t * wall / total / Double(repeats) * 1000, t / total) }
  }

  /// The bytes of the buffers the plan gave this back end, as they stand: parameters (and buffers), the arenas,
  /// the prepared buffers of the inference programs that have run (the others are never touched), and the
  /// training state (Adam's moments and the gradients).
  public var bufferBytes: (parameters: Int, arenas: Int, prepared: Int, training: Int) {
    let bytes = MemoryLayout<Float>.size
    return (bytes * params.count, bytes * arenas.map(\.count).reduce(0, +),
            bytes * prepared.values.filter { $0.version != nil }.map(\.buffer.count).reduce(0, +),
            bytes * (train.loss == nil ? 0 : m.count + v.count + grads.count))
  }

  /// The most images one inference call runs at once. Larger requests run in chunks of this size, so the
  /// arena stays a few MB at any batch and a chunk's activations stay in cache between layers (the
  /// target's rule, from the inference arena of one image).
  public var inferenceChunk: Int {
    compiler.target.inferenceChunk(activationBytesPerImage: inferenceBytesPerImage)
  }

  /// The chunks one call on `count` images runs, in order: (first image, images, program batch). The call
  /// splits as `ProgramSet.inferenceBatches` planned it; when its count was not declared, into the smallest compiled
  /// program that holds its chunk (or the largest). A chunk smaller than its program is padded with zero
  /// images. The plan depends only on `count` and the compiled sizes, never on the thread count.
  public func inferencePlan(_ count: Int) -> [(first: Int, count: Int, batch: Int)] {
    let sizes = inference.keys.sorted()
    let wanted = ProgramSet.balancedChunk(count, inferenceChunk, parts: compiler.target.parallelParts)
    let size = sizes.first { $0 >= wanted } ?? sizes.last!
    return stride(from: 0, to: count, by: size).map { first in
      let n = min(size, count - first)
      return (first, n, sizes.first { $0 >= n }!)
    }
  }

  public func infer(images: [Float], count: Int) throws -> [Float] {
    let some = inference.values.first!
    let px = some.imageFloats / some.batch, perImage = some.output.count / some.batch
    guard count > 0, images.count == count * px else {
      throw DataError("inference takes images of \(px) values; got \(images.count) values for \(count) images")
    }
    // Chunks dealt to the workers' arenas in a fixed order: each image's result depends only on `count`,
    // never on the thread count.
    let chunks = inferencePlan(count)
    var out = [Float](repeating: 0, count: count * perImage)
    let workers = min(inferenceThreads, chunks.count)
    // Every program's arena fits the arenas made at init; inference may use more workers than shards.
    while arenas.count < workers { arenas.append(FloatBuffer(arenas[0].count)) }
    let entries = try inferenceEntries()
    // One chunk has the cores to itself: its large layers split over the pool (the same bits as without).
    let pool = workers == 1 ? singleCallPool()?.pointer : nil
    let padded = chunks.contains { $0.count < $0.batch } ? (0..<workers).map { _ in FloatBuffer(chunks.map(\.batch).max()! * px) } : []
    // The first chunk of each program whose prepared buffer is stale runs alone with step 0, which writes the buffer;
    // every other chunk then reads it with step 1, from any worker. Each image's bits do not depend on the order.
    let stale = Set(chunks.map(\.batch).filter { prepared[$0]?.version != parametersVersion })
    let first = stale.sorted().map { b in chunks.firstIndex { $0.batch == b }! }
    let rest = chunks.indices.filter { !first.contains($0) }, buffers = prepared.mapValues(\.buffer.pointer)
    images.withUnsafeBufferPointer { img in
      out.withUnsafeMutableBufferPointer { o in
        let result = UncheckedSendable(value: o.baseAddress!)
        let run = { (w: Int, c: Int, step: Int64, pool: UnsafeMutableRawPointer?) in
          let (first, n, batch) = chunks[c]
          let (p, entry) = (self.inference[batch]!, entries[batch]!)
          var input = UnsafeMutablePointer(mutating: img.baseAddress! + first * px)
          if n < batch {
            padded[w].pointer.update(from: input, count: n * px)
            (padded[w].pointer + n * px).update(repeating: 0, count: (batch - n) * px)
            input = padded[w].pointer
          }
          entry(self.params.pointer, nil, nil, nil, self.arenas[w].pointer, buffers[batch]!, input, nil, 0, step, 0, pool)
          let base = p.output.base == .images ? input : self.arenas[w].pointer
          (result.value + first * perImage).update(from: base + p.output.offset, count: n * perImage)
        }
        for c in first { run(0, c, 0, singleCallPool()?.pointer) }
        let dealt = { (w: Int) in for i in stride(from: w, to: rest.count, by: workers) { run(w, rest[i], 1, pool) } }
        if workers > 1 { forEachShard(workers, threads: workers, dealt) } else { dealt(0) }
      }
    }
    for b in stale { prepared[b]!.version = parametersVersion }
    return out
  }
}

/// The dropout seed of shard `s` of a batch (shard 0 uses the run's seed); every back end keys shards alike.
public func shardSeed(_ seed: UInt64, _ s: Int) -> Int64 { Int64(bitPattern: seed &+ UInt64(s) &* 0x9e37_79b9_7f4a_7c15) }

/// Carries a value into concurrent code whose accesses the caller has made disjoint.
struct UncheckedSendable<T>: @unchecked Sendable { let value: T }

/// The share of physical memory one plan may take: the rest is the process's own and the system's.
public let plannedMemoryShare = 0.75

/// Refuses a plan that would not fit in this machine's memory, before anything is allocated.
public func checkMemory(bytes: Int, what: String) throws {
  let physical = Int(clamping: ProcessInfo.processInfo.physicalMemory)
  guard Double(bytes) <= Double(physical) * plannedMemoryShare else {
    throw DataError(String(format: "%@ needs %.1f GiB of buffers, more than this machine's %.1f GiB of memory; use a smaller batch or graph",
                           what, Double(bytes) / 1_073_741_824, Double(physical) / 1_073_741_824))
  }
}
