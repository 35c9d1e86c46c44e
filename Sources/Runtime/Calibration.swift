import GraphIR
import Passes

/// Post-training calibration of int8 convs (`cnnc quantize`): the float graph runs on calibration images, in the
/// reference interpreter (`observe`) or as a compiled program computing every candidate's input at once (`probe`,
/// `observe(probed:)`), each candidate conv's input values are observed (their extremes, and an evenly spaced
/// sample for percentiles), and each gets the `Quantization` covering the range the method picks.
public struct Calibration: Sendable {
  /// How a conv input's range is chosen from what calibration saw.
  public enum Method: String, CaseIterable, Sendable {
    /// The smallest and largest values seen.
    case minmax
    /// The values at the low and high percentiles of an evenly spaced sample (outliers clamp instead of
    /// coarsening every step).
    case percentile
  }

  /// Values kept per conv input for percentiles, over all calibration batches.
  public static let sampleSize = 1 << 18

  public let graph: Graph
  /// The layers quantized, by name, in graph order.
  public let convs: [String]
  /// The batches `observe` will see (each keeps its share of the sample).
  let batches: Int
  private var low: [Float], high: [Float], samples: [[Float]]
  public private(set) var observed = 0

  /// The layers int8 can take: convs ungrouped and undilated (`Conv2DAttrs.isDirect` is not) and dense layers, with
  /// sums that fit 32 bits; with `keepFirst`, not those reading the graph's input (the first layer, whose few channels
  /// int8 gains least on); with `keepLast`, not the last of them (the classifier, where accuracy is most at stake).
  public static func candidates(_ graph: Graph, shapes: ShapeTable, keepFirst: Bool, keepLast: Bool = false) -> [String] {
    let inputs = Set(graph.inputs.map(\.name))
    let all: [String] = graph.nodes.compactMap { n in
      guard let x = shapes[n.args.first ?? ""], !(keepFirst && inputs.contains(n.args[0])) else { return nil }
      switch n.op {
      case .conv2d(let a) where a.quantization == nil && !a.isDirect && x.dims[1] * a.kernel * a.kernel <= Int8Arithmetic.maxTerms: return n.name
      case .dense(let a) where a.quantization == nil && x.dims.count == 2 && x.dims[1] <= Int8Arithmetic.maxTerms: return n.name
      default: return nil
      }
    }
    return keepLast ? Array(all.dropLast()) : all
  }

  public init(graph: Graph, convs: [String], batches: Int) {
    self.graph = graph
    self.convs = convs
    self.batches = max(1, batches)
    low = Array(repeating: .infinity, count: convs.count)
    high = Array(repeating: -.infinity, count: convs.count)
    samples = Array(repeating: [], count: convs.count)
  }

  /// Runs one batch of `count` normalised images through the float graph and records each conv's input.
  public mutating func observe(images: [Float], count: Int, parameters: Parameters) throws {
    let stage = try Pipeline(batch: count, purpose: .inference, fuse: false).run(graph, to: .shaped)
    var inputs: [String: RefValue<Float>] = [:]
    for i in graph.inputs {
      guard let t = stage.shapes[i.name] else { continue }
      inputs[i.name] = i.dtype == .f32 ? .f32(Tensor(shape: t.dims, data: images)) : .i32(shape: t.dims, data: Array(repeating: 0, count: t.count))
    }
    let env = try Interpreter<Float>(graph: stage.graph, shapes: stage.shapes)
      .run(inputs: inputs, parameters: parameters.tensors(), context: ReferenceContext(training: false))
    for (k, name) in convs.enumerated() {
      guard let node = graph.node(named: name), let x = env[node.args[0]]?.tensor?.data else { continue }
      record(k, x[...])
    }
    observed += count
  }

  /// Where each layer's input lies in a row of the probe's output (`probe`): its offset and length per image.
  public typealias ProbeSlices = [(offset: Int, count: Int)]

  /// `graph` with one output that holds the input of every layer of `convs`, for a compiled inference program: each
  /// distinct input flattened, all concatenated along the features. The probe's output row of an image holds layer
  /// k's input at `slices[k]`; `width` is the row's length. `shapes` are the graph's (any batch).
  public static func probe(_ graph: Graph, convs: [String], shapes: ShapeTable) throws -> (graph: Graph, width: Int, slices: ProbeSlices) {
    var g = graph, order: [String] = [], offsets: [String: Int] = [:], width = 0
    let names = Set(graph.nodes.map(\.name) + graph.inputs.map(\.name))
    func fresh(_ stem: String) -> String {
      var name = stem, i = 1
      while names.contains(name) { (name, i) = ("\(stem)_\(i)", i + 1) }
      return name
    }
    var slices: ProbeSlices = []
    for name in convs {
      guard let node = graph.node(named: name), let t = shapes[node.args[0]], let batch = t.dims.first, batch > 0 else {
        throw CalibrationError("no shape for the input of '\(name)'")
      }
      let x = node.args[0], count = t.count / batch
      if offsets[x] == nil {
        (offsets[x], width) = (width, width + count)
        order.append(x)
      }
      slices.append((offsets[x]!, count))
    }
    let flats = order.enumerated().map { i, x in Node(name: fresh("calibration_input_\(i)"), op: .flatten, args: [x]) }
    g.nodes += flats
    if flats.count == 1 {
      g.output = flats[0].name
    } else {
      let all = Node(name: fresh("calibration_inputs"), op: .concat(count: flats.count), args: flats.map(\.name))
      g.nodes.append(all)
      g.output = all.name
    }
    (g.minimize, g.gradients) = (nil, [])
    return (g, width, slices)
  }

  /// Records a batch of `count` images from the probe's output (`probe`): `rows` holds each image's row of `width`.
  public mutating func observe(probed rows: [Float], count: Int, width: Int, slices: ProbeSlices) {
    for (k, slice) in slices.enumerated() {
      var x: [Float] = []
      x.reserveCapacity(slice.count * count)
      for image in 0..<count { x += rows[(image * width + slice.offset)..<(image * width + slice.offset + slice.count)] }
      record(k, x[...])
    }
    observed += count
  }

  /// Layer k's input values of one batch: extremes, and the batch's share of the sample.
  private mutating func record(_ k: Int, _ x: ArraySlice<Float>) {
    for v in x where v.isFinite {
      low[k] = min(low[k], v)
      high[k] = max(high[k], v)
    }
    let stride = max(1, x.count * batches / Self.sampleSize)
    samples[k] += Swift.stride(from: x.startIndex, to: x.endIndex, by: stride).map { x[$0] }.filter(\.isFinite)
  }

  /// Each conv's quantization by `method`; `percentile` is the high one (the low one is its complement).
  /// Weights take steps within ±`weightSteps` (`Quantization.weightSteps`).
  public func quantizations(_ method: Method, percentile: Double, weightSteps: Int = Int(Int8Arithmetic.fullWeightSteps)) -> [String: Quantization] {
    var out: [String: Quantization] = [:]
    for (k, name) in convs.enumerated() where low[k] <= high[k] {
      var (lo, hi) = (low[k], high[k])
      if method == .percentile, !samples[k].isEmpty {
        let sorted = samples[k].sorted(), last = Double(sorted.count - 1)
        lo = max(lo, sorted[Int((last * (1 - percentile / 100)).rounded(.down))])
        hi = min(hi, sorted[Int((last * percentile / 100).rounded(.up))])
      }
      var q = Quantization.covering(low: lo, high: hi)
      q.weightSteps = weightSteps
      out[name] = q
    }
    return out
  }

  /// `graph` with each named conv quantized.
  public static func apply(_ quantizations: [String: Quantization], to graph: Graph) -> Graph {
    var g = graph
    g.nodes = graph.nodes.map { n in
      guard let q = quantizations[n.name] else { return n }
      switch n.op {
      case .conv2d(var a):
        a.quantization = q
        return n.replacing(op: .conv2d(a))
      case .dense(var a):
        a.quantization = q
        return n.replacing(op: .dense(a))
      default: return n
      }
    }
    return g
  }
}

/// A calibration that cannot run (a layer's input without a shape).
public struct CalibrationError: UserFacingError {
  public let description: String
  init(_ description: String) { self.description = description }
}
