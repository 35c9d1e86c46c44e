import FileSystem
import Foundation
import GraphIR
import LLVMBackend
import Lowering
import Passes
import Runtime
import SwiftBackend

/// `cnnc bench MODEL --inference-only --batches 1,16`: inference of a model (`.graph` or `.onnx`) on random inputs
/// of its input shape, as an inference engine is timed: per batch size, an inference-only program compiled for
/// that batch, warmed up, then single calls timed one by one until `seconds` have passed (at least
/// `minimumCalls`); the median call gives the time per image. No data set is needed.
struct InferenceBench {
  let file: GraphFile
  let weights: String?
  let batches: [Int]
  let backend: BackendKind
  let target: Target
  let threads: Int?
  let seconds: Double
  let seed: UInt64
  let profile: Bool

  /// Calls timed per batch size at the least, however long they take.
  static let minimumCalls = 5
  /// Untimed calls first: code pages, arenas and caches touched once.
  static let warmupCalls = 2
  /// The random stream of the inputs (apart from the weights' stream of the same seed).
  static let inputStream: UInt64 = 0x1a9_07

  /// The JSON object of the figures.
  func run() throws -> String {
    let shapes = try file.run { () throws(DiagnosticList) in try inferShapes(file.graph, batch: 1) }
    guard let image = file.graph.inputs.first(where: { $0.dtype == .f32 }), let dims = shapes[image.name]?.dims else {
      throw DataError("\(file.path): the graph has no f32 image input")
    }
    // The model's own weights (an .onnx model's, or --weights); a .graph without them gets seeded random ones.
    var parameters = Parameters(graph: file.graph, shapes: shapes, seed: seed)
    if weights != nil || file.initializers != nil {
      let (st, source) = try file.weights(weights)
      try parameters.load(st, path: source, stateKey: file.graph.stateKey)
    }
    let per = dims.dropFirst().reduce(1, *)
    let flopsPerImage = summarize(file.graph, shapes).reduce(0) { $0 + $1.flopsPerImage }
    var usPerImage: [(Int, Double)] = [], compileSeconds: [(Int, Double)] = [], profiles: [String] = [], planned: [(Int, String)] = []
    var rng = SeededRandom(seed: seed, stream: Self.inputStream)
    for batch in batches {
      let start = Date()
      var b = try makeBackend(batch)
      compileSeconds.append((batch, Date().timeIntervalSince(start)))
      try b.loadParameters(parameters)
      let images = (0..<(batch * per)).map { _ in rng.uniform(-1, 1) }
      for _ in 0..<Self.warmupCalls { _ = try b.infer(images: images, count: batch) }
      var calls: [Double] = []
      let begin = Date()
      while calls.count < Self.minimumCalls || Date().timeIntervalSince(begin) < seconds {
        let t = Date()
        _ = try b.infer(images: images, count: batch)
        calls.append(Date().timeIntervalSince(t))
      }
      usPerImage.append((batch, calls.sorted()[calls.count / 2] / Double(batch) * 1e6))
      if let b = b as? InferencePlanning {
        let (parameters, arenas, prepared, _) = b.bufferBytes, mb = { (bytes: Int) in String(format: "%.1f", Double(bytes) / 1_048_576) }
        planned.append((batch, "{\"parameters\": \(mb(parameters)), \"arenas\": \(mb(arenas)), \"prepared\": \(mb(prepared)), \"total\": \(mb(parameters + arenas + prepared))}"))
      }
      if profile, let b = b as? InferenceProfiling & InferencePlanning {
        // One call of the program that serves this batch (a large batch runs in chunks of its size).
        let chunk = b.inferencePlan(batch)[0].batch
        profiles.append(try b.inferenceProfileField(images: Array(images.prefix(chunk * per)), count: chunk, repeats: max(Self.minimumCalls, calls.count / 4)))
      }
    }
    let peak = peakResidentMegabytes(), roundTrip = ThreadPool.coreRoundTrip()
    func keyed(_ values: [(Int, Double)], _ digits: Int) -> String {
      "{" + values.map { "\"\($0.0)\": \(String(format: "%.\(digits)f", $0.1))" }.joined(separator: ", ") + "}"
    }
    let fields: [(String, String)] = [
      ("framework", "\"cnnc \(backend.rawValue)\""), ("graph", "\"\(file.graph.name)\""), ("mode", "\"inference\""),
      ("input", "[\(dims.dropFirst().map(String.init).joined(separator: ", "))]"), ("gflop_per_image", String(format: "%.3f", Double(flopsPerImage) / 1e9)),
      ("inference_us_per_image", keyed(usPerImage, 1)), ("inference_images_per_s", keyed(usPerImage.map { ($0.0, 1e6 / $0.1) }, 1)),
      ("inference_gflops", keyed(usPerImage.map { ($0.0, Double(flopsPerImage) / $0.1 / 1e3) }, 1)),
      ("compile_s", keyed(compileSeconds, 3)), ("peak_rss_mb", String(format: "%.1f", peak)),
      ("planned_mb", "{" + planned.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"),
      ("threads", "\(threads ?? ProcessInfo.processInfo.activeProcessorCount)"),
      ("target", "{\"cpu\": \"\(target.cpu)\", \"host_cpu\": \"\(Target.host().cpu)\", \"isa\": \"\(target.isa.rawValue)\", \"lanes\": \(target.lanes), \"registers\": \(target.vectorRegisters)}"),
      // What a handoff between two cores cost right after the timing (`ThreadPool.coreRoundTrip`): batch 1 on
      // several threads is only as fast as these handoffs allow.
      ("core_round_trip_ns", roundTrip.map { String(format: "%.0f", $0) } ?? "null"),
    ]
    return "{\n" + (fields.map { "  \"\($0.0)\": \($0.1)" } + profiles).joined(separator: ",\n") + "\n}"
  }

  /// An inference-only back end for calls of `batch` images (the JIT without an object cache, so `compile_s` is
  /// a cold compile).
  func makeBackend(_ batch: Int) throws -> any InferenceBackend {
    switch backend {
    case .swift:
      return try CompiledBackend(inferenceOf: file.graph, compiler: try SwiftCompiler(source: file.path, target: target), inferenceCalls: [batch], threads: threads,
                                 profile: profile)
    default:
      return try CompiledBackend(inferenceOf: file.graph, compiler: try JITCompiler(target: target, cache: nil), inferenceCalls: [batch], threads: threads,
                                 profile: profile)
    }
  }
}

/// A back end that runs large requests in chunks of its compiled batches.
protocol InferencePlanning {
  func inferencePlan(_ count: Int) -> [(first: Int, count: Int, batch: Int)]
  var bufferBytes: (parameters: Int, arenas: Int, prepared: Int, training: Int) { get }
}

extension CompiledBackend: InferencePlanning {}
