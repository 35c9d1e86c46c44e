import CNNCTestSupport
import Foundation
import GraphIR
import ONNX
import Passes
import Runtime
import Testing

/// ONNX models exported by torch.onnx (`Scripts/onnx/export_fixtures.py`, committed in Tests/Fixtures/onnx with
/// PyTorch's outputs on three fixed images) read into `.graph`: the statements a hand-written file would have,
/// the weights under their state_dict names, and the same outputs; malformed and unsupported models get one
/// clear error.
@Suite struct ImportTests {
  static let fixtures = Fixtures.root.appendingPathComponent("Tests/Fixtures/onnx")

  struct Expected: Decodable {
    var input: [Float]
    var shape: [Int]
    var output: [Float]
  }

  /// The imported graph's inference output (the reference interpreter) on the fixture's images, and PyTorch's.
  static func outputs(_ name: String) throws -> (ImportedModel, [Float], [Float]) {
    let m = try ONNXImport.read(fixtures.appendingPathComponent("\(name).onnx").path)
    let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: fixtures.appendingPathComponent("\(name).onnx.json")))
    let graph = prunedToOutput(m.graph)
    let shapes = try inferShapes(graph, batch: expected.shape[0])
    // The import's tensors are under their state_dict keys; the interpreter reads the graph's names.
    var parameters: [String: Tensor<Float>] = [:]
    for name in graph.parameterNames + graph.bufferNames {
      guard let t = m.tensors[m.graph.stateKey(name)] else { continue }
      parameters[name] = Tensor<Float>(shape: t.shape, data: t.data)
    }
    let n = expected.shape[0]
    let env = try Interpreter<Float>(graph: graph, shapes: shapes).run(
      inputs: [graph.inputs[0].name: .f32(Tensor(shape: expected.shape, data: expected.input)), "label": .i32(shape: [n], data: [Int32](repeating: 0, count: n))],
      parameters: parameters, context: ReferenceContext(training: false))
    return (m, env[graph.output!]!.tensor!.data, expected.output)
  }

  @Test func tinyReadsLikeTheHandWrittenGraphAndComputesPyTorchsLogits() throws {
    let (m, ours, theirs) = try Self.outputs("tiny")
    #expect(m.text.contains("conv1   = conv2d(image, filters: 4, kernel: 3, stride: 2)"), "\(m.text)")
    #expect(m.text.contains("= maxpool(relu, size: 2)"), "\(m.text)")
    #expect(m.text.contains("fc1     = dense(flatten, units: 10)") && m.text.contains("= cross_entropy(fc1, label)"), "\(m.text)")
    #expect(Set(m.tensors.keys) == ["conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias"])
    #expect(m.graph.parameterNames == ["conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias"])
    #expect(ours.count == theirs.count && zip(ours, theirs).allSatisfy { abs($0 - $1) <= 1e-4 }, "\(ours.prefix(5)) vs \(theirs.prefix(5))")
    #expect(m.notes.isEmpty)
  }

  /// The format 1.3 blocks as the default exporter writes them (Scripts/onnx/export_fixtures.py's ZooBlocks): ReLU6 as
  /// Clip, a 5x5 depthwise conv, hard-swish, a squeeze-excitation gate, SiLU, concat, Split into chunks, the
  /// channel shuffle, a padded ceil-mode max pool, torchvision-style dotted names kept as state prefixes, and the
  /// stem's batch norm folded by the exporter (said once); PyTorch's logits within 1e-4.
  @Test func zooBlocksFromTheDefaultExporter() throws {
    let (m, ours, theirs) = try Self.outputs("zoo_blocks")
    let ops = Set(m.graph.nodes.map(\.op.spelling))
    #expect(ops.isSuperset(of: ["clip", "hardswish", "hardsigmoid", "mul", "silu", "concat", "chunk", "channel_shuffle", "maxpool"]), "\(m.text)")
    #expect(m.text.contains("groups: 8") && m.text.contains("ceil_mode: true"), "\(m.text)")
    #expect(m.graph.stateNames["features_1"] == "features.1" && m.tensors["features.1.weight"] != nil, "\(m.graph.stateNames)")
    #expect(m.notes.count == 1 && m.notes[0].contains("1 convs have weights and biases the exporter computed"), "\(m.notes)")
    #expect(ours.count == theirs.count && zip(ours, theirs).allSatisfy { abs($0 - $1) <= 1e-4 }, "\(ours.prefix(5)) vs \(theirs.prefix(5))")
  }

  /// Batch norm (running statistics away from 0 and 1, momentum converted), a residual add, average pooling
  /// and a final log-softmax, which is folded into the loss (PyTorch's log-probabilities = log_softmax of ours).
  @Test func batchNormResidualAndAFinalLogSoftmax() throws {
    let (m, ours, theirs) = try Self.outputs("bnnet")
    #expect(m.text.contains("= batchnorm(conv1)"), "\(m.text)")
    #expect(m.text.contains("add("), "\(m.text)")
    #expect(m.text.contains("avgpool("), "\(m.text)")
    #expect(Set(m.tensors.keys).isSuperset(of: ["bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "conv1.weight", "fc.bias"]))
    #expect(m.notes.contains { $0.contains("LogSoftmax is folded into the loss") })
    let classes = 5
    for row in 0..<(ours.count / classes) {
      let z = Array(ours[(row * classes)..<((row + 1) * classes)])
      let top = z.max()!, logSum = top + log(z.reduce(0) { $0 + exp($1 - top) })
      for k in 0..<classes { #expect(abs(z[k] - logSum - theirs[row * classes + k]) <= 1e-4) }
    }
  }

  /// torch.onnx's default exporter: opset 18, the weights in tiny_dynamo.onnx.data beside the model; without
  /// that file the import says which file it could not read.
  @Test func theDefaultExportersExternalWeights() throws {
    let (m, ours, theirs) = try Self.outputs("tiny_dynamo")
    #expect(Set(m.tensors.keys) == ["conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias"])
    #expect(ours.count == theirs.count && zip(ours, theirs).allSatisfy { abs($0 - $1) <= 1e-4 })
    let alone = NSTemporaryDirectory() + "cnnc-onnx-\(UUID().uuidString).onnx"
    try FileManager.default.copyItem(atPath: Self.fixtures.appendingPathComponent("tiny_dynamo.onnx").path, toPath: alone)
    let message = Self.thrown { _ = try ONNXImport.read(alone) }
    #expect(message.contains("keeps its data in") && message.contains("tiny_dynamo.onnx.data, which cannot be read"), "\(message)")
  }

  /// The message of the error a body throws, or "" when it throws none.
  static func thrown(_ body: () throws -> Void) -> String {
    do {
      try body()
      return ""
    } catch {
      return "\(error)"
    }
  }

  static func error(_ data: Data) -> String { thrown { _ = try ONNXImport.translate(data, path: "m.onnx") } }

  @Test func malformedModelsGetOneClearError() throws {
    let tiny = try Data(contentsOf: Self.fixtures.appendingPathComponent("tiny.onnx"))
    #expect(Self.error(Data("not a model at all, just text".utf8)).contains("m.onnx: not an ONNX model"))
    #expect(Self.error(tiny.prefix(tiny.count / 2)).hasPrefix("m.onnx: "))
    #expect(Self.error(Data()).contains("the model has no graph"))
    #expect(throws: ONNXError.self) { _ = try ONNXImport.read("/nonexistent/model.onnx") }
    // Every byte flipped in turn in a stretch of the file: an error or a model, never a crash.
    for i in stride(from: 0, to: tiny.count, by: max(1, tiny.count / 300)) {
      var d = tiny
      d[i] ^= 0xA5
      _ = Self.error(d)
    }
  }

  /// An op cnnc lacks is named with its node and the list of what is supported.
  @Test func anUnsupportedOpIsNamed() throws {
    let tiny = try Data(contentsOf: Self.fixtures.appendingPathComponent("tiny.onnx"))
    // The Relu node's op_type field (field 4, length-delimited: tag 0x22, length 4) becomes an op cnnc lacks.
    var d = tiny
    let at = try #require(d.range(of: Data([0x22, 0x04]) + Data("Relu".utf8)))
    d.replaceSubrange(at, with: Data([0x22, 0x04]) + Data("Erf_".utf8))
    let message = Self.error(d)
    #expect(message.contains("(Erf_): not supported; cnnc imports Conv, Relu"), "\(message)")
  }

  /// The inference output of `graph` (the reference interpreter) on seeded images, with `parameters`.
  static func infer(_ graph: Graph, _ parameters: [String: Tensor<Float>], batch: Int) throws -> [Float] {
    let g = prunedToOutput(graph), shapes = try inferShapes(g, batch: batch)
    var r = SeededRandom(seed: 9)
    var inputs: [String: RefValue<Float>] = [:]
    for i in g.inputs {
      let t = shapes[i.name]!
      inputs[i.name] = i.dtype == .f32 ? .f32(Tensor(shape: t.dims, data: (0..<t.count).map { _ in r.uniform(-1, 1) }))
        : .i32(shape: t.dims, data: [Int32](repeating: 0, count: t.count))
    }
    return try Interpreter<Float>(graph: g, shapes: shapes).run(inputs: inputs, parameters: parameters, context: ReferenceContext(training: false))[g.output!]!
      .tensor!.data
  }

  /// `cnnc export`'s serialisation read back by the import: every parameter and buffer under its name with
  /// its values, and the same inference outputs (dropout is an identity in both).
  @Test(arguments: ["simplecnn.graph", "bncnn.graph", "resnet8.graph", "lenet5.graph", "mlp.graph", "residual.graph"])
  func exportedModelsImportBack(_ name: String) throws {
    let g = try Fixtures.parse(Fixtures.graphs.appendingPathComponent(name))
    let shapes = try inferShapes(g, batch: 1)
    var p = Parameters(graph: g, shapes: shapes, seed: 5)
    // Running statistics away from 0 and 1, so that their round trip shows.
    for b in g.bufferNames { p.values[b] = p.values[b]!.indices.map { 0.5 + 0.01 * Float($0 % 50) } }
    let tensors = Dictionary(uniqueKeysWithValues: (g.parameterNames + g.bufferNames).map { ($0, (shape: p.shapes[$0]!, data: p.values[$0]!)) })
    let image = g.inputs.first { $0.dtype == .f32 }!
    let data = try ONNXExport.serialize(g, inputDims: Array(shapes[image.name]!.dims.dropFirst()), outputDims: Array(shapes[g.output!]!.dims.dropFirst()),
                                        tensors: tensors, producerVersion: "test")
    let m = try ONNXImport.translate(data, path: name)
    #expect(Set(m.tensors.keys) == Set(tensors.keys))
    for (k, v) in tensors { #expect(m.tensors[k]?.shape == v.shape && m.tensors[k]?.data == v.data, "\(k)") }
    #expect(m.graph.parameterNames.count == g.parameterNames.count)
    let original = try Self.infer(g, p.tensors(), batch: 2)
    let back = try Self.infer(m.graph, m.tensors.mapValues { Tensor<Float>(shape: $0.shape, data: $0.data) }, batch: 2)
    #expect(original.count == back.count && zip(original, back).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($0)) })
  }

  /// An int8 graph exports in the QDQ form (QuantizeLinear/DequantizeLinear before each int8 conv, s8 weights per
  /// channel) and imports back to the same quantizations, clips at their range and the same outputs, bit for bit;
  /// weights in the reduced range (`weight_steps: 64`) come back in it.
  @Test(arguments: [127, 64]) func int8ConvsRoundTripThroughTheQDQForm(_ steps: Int) throws {
    let range = steps == 127 ? "" : ", weight_steps: \(steps)"
    let g = try Parser.parse("""
      input image: f32[N, 3, 8, 8]
      input label: i32[N]
      a = conv2d(image, filters: 6, kernel: 3, padding: 1, input_scale: 0.02, input_zero_point: 120\(range))
      r = relu(a)
      d = conv2d(r, filters: 6, kernel: 3, groups: 6)
      b = conv2d(d, filters: 4, kernel: 1, input_scale: 0.01\(range))
      f = flatten(b)
      fc = dense(f, units: 3)
      loss = cross_entropy(fc, label)
      output fc
      minimize loss
      """, defaultName: "q")
    let shapes = try inferShapes(g, batch: 1)
    let p = Parameters(graph: g, shapes: shapes, seed: 5)
    let tensors = Dictionary(uniqueKeysWithValues: g.parameterNames.map { ($0, (shape: p.shapes[$0]!, data: p.values[$0]!)) })
    let data = try ONNXExport.serialize(g, inputDims: [3, 8, 8], outputDims: [3], tensors: tensors, producerVersion: "test")
    let m = try ONNXImport.translate(data, path: "q.onnx")
    #expect(m.graph.int8Nodes.count == 2, "\(m.text)")
    #expect(m.text.contains("input_scale: 0.019999999552965164, input_zero_point: 120\(range))"), "\(m.text)")
    #expect(m.text.contains("clip(image, min: -2.3999998569488525, max: 2.700000047683716)"), "\(m.text)")
    #expect(m.notes.contains { $0.contains("2 quantize-dequantize pairs") })
    let original = try Self.infer(g, p.tensors(), batch: 2)
    let back = try Self.infer(m.graph, m.tensors.mapValues { Tensor<Float>(shape: $0.shape, data: $0.data) }, batch: 2)
    #expect(original == back)
  }

  /// ONNX Runtime's `quantize_static` output of the tiny model (QDQ, its relu removed for the quantizer's clamp at
  /// zero): the conv and the dense layer read as int8, the pairs as clips, and the reference computes ONNX Runtime's outputs to within
  /// its requantisation of the logits (a step of the output's scale).
  @Test func onnxRuntimesQuantizedModelImports() throws {
    let (m, ours, theirs) = try Self.outputs("tiny_qdq")
    #expect(m.graph.int8Nodes.map(\.name) == ["conv1", "fc1"], "\(m.text)")
    #expect(!m.text.contains("relu("), "the quantizer removed the relu: \(m.text)")
    #expect(m.text.contains("clip(conv1, min: 0.0,"), "\(m.text)")
    #expect(ours.count == theirs.count)
    let largest = theirs.map(abs).max() ?? 1
    let worst = zip(ours, theirs).map { abs($0 - $1) }.max() ?? 0
    #expect(worst <= 0.02 * largest, "largest difference \(worst) of \(largest)")
  }
}
