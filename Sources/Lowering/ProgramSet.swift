import GraphIR

/// Every program a compiled back end runs for one graph, lowered together from the graph, the batch, the shard
/// count, the inference calls a command will make and the target: the training step (one program, or for
/// several shards a gradient program and an optimiser program) and an inference program per batch the calls
/// need (`inferenceBatches`). An inference-only set has no training step: its first program (one image) only
/// fixes the parameter layout.
public struct ProgramSet: Sendable {
  /// The programs in compile order: the training step's first, then the inference programs.
  public let programs: [Program]
  /// Where the inference programs start in `programs`.
  public let firstInference: Int
  public let inferenceOnly: Bool
  /// Arena bytes one image takes in the one-image inference program (sizes inference chunks).
  public let inferenceBytesPerImage: Int

  /// Lowers the set. With no calls declared, a one-image program is made.
  public init(graph: Graph, batch: Int, shards: Int, optimizer: OptimizerSpec, inferenceCalls: [Int], target: Target,
              fuse: Bool = true, profile: Bool = false, inferenceOnly: Bool = false) throws(DiagnosticList) {
    let single = try lower(graph, batch: 1, mode: .infer, target: target, fuse: fuse, profile: profile)
    var programs = [inferenceOnly ? single
                    : shards == 1 ? try lower(graph, batch: batch, mode: .train(optimizer), target: target, fuse: fuse, profile: profile)
                    : try lower(graph, batch: batch / shards, mode: .gradients, target: target, fuse: fuse, profile: profile)]
    if shards > 1 && !inferenceOnly { programs.append(try lowerOptimizer(graph, optimizer, target: target)) }
    firstInference = programs.count
    inferenceBytesPerImage = 4 * single.arenaFloats
    let chunk = target.inferenceChunk(activationBytesPerImage: inferenceBytesPerImage)
    var batches = Self.inferenceBatches(inferenceCalls, chunk: chunk, parts: target.parallelParts)
    if batches.isEmpty { batches = [1] }
    if inferenceOnly { batches.remove(1) } else if batches.contains(1) { programs.append(single) }
    for b in batches.sorted() where b > 1 {
      programs.append(try lower(graph, batch: b, mode: .infer, target: target, fuse: fuse, profile: profile))
    }
    self.programs = programs
    self.inferenceOnly = inferenceOnly
  }

  /// The training step (or gradient program), or an inference-only set's one-image program.
  public var step: Program { programs[0] }
  /// The optimiser program of a sharded training step.
  public var update: Program? { !inferenceOnly && firstInference > 1 ? programs[1] : nil }
  /// What is compiled before the first step: the training step's programs (every program, inference-only).
  public var compiledFirst: [Program] { inferenceOnly ? programs : Array(programs[..<firstInference]) }
  /// The inference programs, by batch.
  public var evaluation: [Program] { Array(programs[(inferenceOnly ? 0 : firstInference)...]) }

  /// The inference programs' batches for a command's `infer` calls of these image counts: each call splits into
  /// the fewest equal chunks of at most `chunk` images, and at least `parts`.
  public static func inferenceBatches(_ calls: [Int], chunk: Int, parts: Int) -> Set<Int> {
    Set(calls.filter { $0 > 0 }.map { balancedChunk($0, chunk, parts: parts) })
  }

  /// The size of the fewest equal chunks of at most `chunk` images that hold `count`, and at least `parts` of them
  /// when there are that many images: the target's cores then each run whole images, with no hand-offs between
  /// layers (one chunk of 16 224x224 images ran layer by layer over the pool at 1.3-1.5x the time per image of one).
  /// The target fixes `parts`, so the plan, and each image's bits, do not depend on the threads a run is given.
  /// With at least two chunks per part, their number is a multiple of the parts (every core busy to the end: 16
  /// images in chunks of at most 6 ran as 6, 6 and 4 on two cores, 1.3x the time of four chunks of 4), the first
  /// such number whose padding is at most 1/`paddingShare` of the images.
  public static func balancedChunk(_ count: Int, _ chunk: Int, parts: Int = 1) -> Int {
    var chunks = max((count + chunk - 1) / chunk, min(count, max(1, parts)))
    if parts > 1, count >= 2 * parts, chunks % parts != 0 || padding(count, chunks) > count / paddingShare {
      chunks = (chunks + parts - 1) / parts * parts
      while chunks + parts <= count, padding(count, chunks) > count / paddingShare { chunks += parts }
    }
    return (count + chunks - 1) / chunks
  }

  /// The share of a call's images its chunks may pad (`balancedChunk`): 1/32.
  static let paddingShare = 32

  /// The zero images `chunks` equal chunks of `count` images add.
  static func padding(_ count: Int, _ chunks: Int) -> Int { (count + chunks - 1) / chunks * chunks - count }
}
