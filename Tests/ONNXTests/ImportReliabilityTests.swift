import FileSystem
import Foundation
import GraphIR
import ONNX
import Passes
import Runtime
import Testing

/// Models an exporter could write but cnnc cannot take as they are, and external data that is not what it claims:
/// one error naming the node and the attribute (or the file and the range), or the right import.
struct ImportReliabilityTests {
  static func message(_ data: Data) -> String {
    do {
      _ = try ONNXImport.translate(data, path: "m.onnx")
      return ""
    } catch {
      return "\(error)"
    }
  }

  @Test func aNegativeLeakyReluSlopeImports() throws {
    let data = ONNXBuilder.convModel { b, x in b.node("LeakyRelu", [x], "y", [("alpha", .float(-0.5))]) }
    let m = try ONNXImport.translate(data, path: "m.onnx")
    #expect(m.text.contains("slope: -0.5"), "\(m.text)")
  }

  @Test(arguments: [
    ("strides 0", [("strides", ONNXBuilder.Attribute.ints([0, 0]))], "attribute 'strides' is 0"),
    ("negative pads", [("pads", .ints([-1, -1, -1, -1]))], "attribute 'pads' is -1"),
  ])
  func badConvAttributesAreNamed(_ what: String, _ attributes: [(String, ONNXBuilder.Attribute)], _ expected: String) {
    let m = Self.message(ONNXBuilder.convModel(convAttributes: attributes))
    #expect(m.contains("node '/c/Conv' (Conv): \(expected)"), "\(what): \(m)")
    #expect(!m.contains("does not parse"))
  }

  @Test func zeroFiltersAreNamed() {
    let m = Self.message(ONNXBuilder.convModel(filters: 0))
    #expect(m.contains("(Conv): the weight's shape [0, 1, 4, 4] has a zero dimension"), "\(m)")
  }

  @Test(arguments: [Float.nan, .infinity])
  func nonFiniteAttributesAreNamed(_ bad: Float) {
    let cases: [(String, (inout ONNXBuilder, String) -> Void, String)] = [
      ("LeakyRelu", { b, x in b.node("LeakyRelu", [x], "y", [("alpha", .float(bad))]) }, "attribute 'alpha' is \(bad)"),
      ("BatchNormalization", { b, x in
        for (name, v) in [("s", 1), ("b", 0), ("m", 0), ("v", 1)] { b.initializer(name, dims: [3], values: [Float](repeating: Float(v), count: 3)) }
        b.node("BatchNormalization", [x, "s", "b", "m", "v"], "y", [("epsilon", .float(bad))])
      }, "attribute 'epsilon' is \(bad)"),
      ("Dropout", { b, x in b.node("Dropout", [x], "y", [("ratio", .float(bad))]) }, "attribute 'ratio' is \(bad)"),
    ]
    for (op, then, expected) in cases {
      let m = Self.message(ONNXBuilder.convModel(then: then))
      #expect(m.contains("(\(op)): \(expected)"), "\(op): \(m)")
    }
  }

  /// A softmax over another axis than the classes' is refused, never imported as if it were over them.
  @Test func softmaxOverAnotherAxisIsRefused() throws {
    for axis in [0, 2, -2] {
      let m = Self.message(ONNXBuilder.convModel { b, x in
        b.node("Softmax", [x], "s", [("axis", .int(axis))])
        b.node("Relu", ["s"], "y")
      })
      #expect(m.contains("(Softmax): attribute 'axis' is \(axis)"), "\(m)")
      // A final one, folded into the loss, too.
      let last = Self.message(ONNXBuilder.convModel { b, x in b.node("LogSoftmax", [x], "y", [("axis", .int(axis))]) })
      #expect(last.contains("(LogSoftmax): attribute 'axis' is \(axis)"), "\(last)")
    }
    for axis in [1, -1] {
      let m = try ONNXImport.translate(ONNXBuilder.convModel { b, x in
        b.node("Softmax", [x], "s", [("axis", .int(axis))])
        b.node("Relu", ["s"], "y")
      }, path: "m.onnx")
      #expect(m.text.contains("softmax("))
    }
  }

  /// External data: absurd offsets and lengths, files that are not regular, links out of the model's directory.
  @Test func externalDataIsCheckedBeforeItIsRead() throws {
    let dir = try makeTemporaryDirectory(prefix: "cnnc-onnx-external")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let weights = (0..<48).flatMap { i in withUnsafeBytes(of: (Float(i) * 0.01).bitPattern.littleEndian) { Array($0) } }
    try writeAtomically(weights, to: Path.join(dir, "w.data"))
    func importing(_ external: [(String, String)], file: String = "m.onnx") throws -> String {
      let model = Path.join(dir, file)
      try ONNXBuilder.convModel(external: external).write(to: URL(fileURLWithPath: model))
      do {
        _ = try ONNXImport.read(model)
        return ""
      } catch {
        return "\(error)"
      }
    }
    #expect(try importing([("location", "w.data"), ("offset", "0"), ("length", "192")]) == "")
    let cases: [([(String, String)], String)] = [
      ([("location", "w.data"), ("offset", "9223372036854775808"), ("length", "192")], "is not a byte count"),
      ([("location", "w.data"), ("offset", "9223372036854775807"), ("length", "192")], "past the end"),
      ([("location", "w.data"), ("offset", "100"), ("length", "192")], "ends before the 192 bytes at offset 100"),
      ([("location", "w.data"), ("offset", "-4")], "is not a byte count"),
      ([("location", "../w.data")], "names no external data file"),
      ([("location", "/dev/zero")], "names no external data file"),
    ]
    for (external, expected) in cases {
      let m = try importing(external)
      #expect(m.contains(expected) && m.contains("(Conv)"), "\(external): \(m)")
    }
    // Not regular files: a FIFO (which would block a plain read), a directory, links to a device and to /proc.
    #expect(mkfifo(Path.join(dir, "fifo.data"), 0o600) == 0)
    #expect(try importing([("location", "fifo.data")]).contains("is a FIFO, not a regular file"))
    try makeDirectory(Path.join(dir, "d.data"))
    #expect(try importing([("location", "d.data")]).contains("is a directory, not a regular file"))
    #expect(symlink("/dev/zero", Path.join(dir, "zero.data")) == 0)
    #expect(try importing([("location", "zero.data")]).contains("outside the model's directory"))
    #expect(symlink("/proc/self/mem", Path.join(dir, "mem.data")) == 0)
    #expect(try importing([("location", "mem.data")]).contains("outside the model's directory"))
    // A link that stays inside the directory is followed.
    #expect(symlink("w.data", Path.join(dir, "link.data")) == 0)
    #expect(try importing([("location", "link.data"), ("length", "192")]) == "")
  }

  /// A QDQ model with a damaged activation scale (zero) is refused at the node; any byte of ONNX Runtime's quantized
  /// fixture flipped gives an error or a model, never a crash.
  @Test func damagedQDQModelsGetOneClearError() throws {
    let g = try Parser.parse("""
      input image: f32[N, 2, 6, 6]
      a = conv2d(image, filters: 3, kernel: 3, input_scale: 0.015625, input_zero_point: 7)
      output a
      """, defaultName: "q")
    let shapes = try inferShapes(g, batch: 1)
    let p = Parameters(graph: g, shapes: shapes, seed: 2)
    let tensors = Dictionary(uniqueKeysWithValues: g.parameterNames.map { ($0, (shape: p.shapes[$0]!, data: p.values[$0]!)) })
    var data = try ONNXExport.serialize(g, inputDims: [2, 6, 6], outputDims: [3, 4, 4], tensors: tensors, producerVersion: "test")
    #expect(Self.message(data) == "")
    // 0.015625 (2^-6) occurs once: the input scale's raw bytes.
    let scale = withUnsafeBytes(of: Float(0.015625).bitPattern.littleEndian) { Data($0) }
    let at = try #require(data.range(of: scale))
    data.replaceSubrange(at, with: Data(count: 4))
    let message = Self.message(data)
    #expect(message.contains("QuantizeLinear") && message.contains("scale must be one positive, normal float"), "\(message)")
    let fixture = try Data(contentsOf: ImportTests.fixtures.appendingPathComponent("tiny_qdq.onnx"))
    for i in stride(from: 0, to: fixture.count, by: max(1, fixture.count / 400)) {
      var d = fixture
      d[i] ^= 0x5A
      _ = Self.message(d)
    }
  }
}

/// What torch.onnx's exporters write around ops: initializers read through Identity nodes or given as Constant
/// nodes, and adaptive average pooling as ReduceMean over H and W.
struct ExporterFormsTests {
  /// conv -> (the op under test) -> flatten, on [N, 1, 4, 4] with three 2x2 filters (so [N, 3, 3, 3] before it).
  static func model(_ then: (inout ONNXBuilder, String) -> String, outputDims: [Int?] = [nil, 3]) -> Data {
    var b = ONNXBuilder(inputDims: [1, 4, 4])
    b.initializer("conv.weight", dims: [3, 1, 2, 2], values: (0..<12).map { Float($0) * 0.1 - 0.5 })
    b.node("Conv", ["input", "conv.weight"], "c")
    let last = then(&b, "c")
    if last != b.output { b.output = last }
    return b.data(outputDims: outputDims)
  }

  @Test func initializersThroughIdentityAndConstantNodes() throws {
    var b = ONNXBuilder(inputDims: [1, 4, 4])
    b.initializer("onnx::Conv_7", dims: [3, 1, 4, 4], values: (0..<48).map { Float($0 % 5) * 0.1 })
    b.node("Identity", ["onnx::Conv_7"], "onnx::Conv_8")
    b.node("Constant", [], "onnx::Conv_9", [("value", .tensor([3], [0.5, -0.5, 1]))])
    b.node("Conv", ["input", "onnx::Conv_8", "onnx::Conv_9"], "c")
    b.node("Flatten", ["c"], "f")
    let m = try ONNXImport.translate(b.data(outputDims: [nil, 3]), path: "m.onnx")
    let conv = try #require(m.graph.nodes.first { $0.op.spelling == "conv2d" })
    #expect(m.tensors["\(conv.name).weight"]?.data.count == 48)
    #expect(m.tensors["\(conv.name).bias"]?.data == [0.5, -0.5, 1])
  }

  @Test func reduceMeanOverHeightAndWidthIsAGlobalAveragePool() throws {
    // Opset 17 (axes an attribute), keeping the dims, then a flatten.
    let kept = try ONNXImport.translate(Self.model { b, x in
      b.node("ReduceMean", [x], "r", [("axes", .ints([2, 3]))])
      b.node("Flatten", ["r"], "f")
      return "f"
    }, path: "m.onnx")
    #expect(kept.text.contains("= global_avgpool(conv)"), "\(kept.text)")
    // Opset 18 (axes an input), dropping them: a flatten follows the pool.
    let dropped = try ONNXImport.translate(Self.model { b, x in
      b.int64Initializer("axes", [-1, -2])
      b.node("ReduceMean", [x, "axes"], "r", [("keepdims", .int(0))])
      return "r"
    }, path: "m.onnx")
    #expect(dropped.text.contains("global_avgpool(conv)") && dropped.text.contains("flatten("), "\(dropped.text)")
    // Means over other axes are refused by name.
    let m = ImportReliabilityTests.message(Self.model { b, x in
      b.node("ReduceMean", [x], "r", [("axes", .ints([1])), ("keepdims", .int(0))])
      return "r"
    })
    #expect(m.contains("(ReduceMean): attribute 'axes' is [1]"), "\(m)")
  }

}

/// Layers whose `state_dict` prefix is not an identifier are renamed, and said so apart from the other notes, so
/// that commands list them only with --verbose.
struct RenameNotesTests {
  @Test func renamesAreKeptApartFromNotes() throws {
    var b = ONNXBuilder(inputDims: [1, 4, 4])
    b.initializer("layer1.0.conv1.weight", dims: [3, 1, 4, 4], values: (0..<48).map { Float($0 % 7) * 0.1 })
    b.node("Conv", ["input", "layer1.0.conv1.weight"], "c")
    b.node("Flatten", ["c"], "f")
    let m = try ONNXImport.translate(b.data(outputDims: [nil, 3]), path: "m.onnx")
    #expect(m.notes.isEmpty)
    #expect(m.renames.count == 1 && m.renames[0].contains("'layer1.0.conv1' is named 'layer1_0_conv1'"), "\(m.renames)")
    // The weights keep PyTorch's key through a `state` statement (format 1.3), in the graph text too.
    #expect(m.graph.stateNames == ["layer1_0_conv1": "layer1.0.conv1"])
    #expect(m.tensors["layer1.0.conv1.weight"]?.data.count == 48 && m.tensors["layer1_0_conv1.weight"] == nil)
    #expect(m.text.contains("state layer1_0_conv1 \"layer1.0.conv1\""))
  }

  /// ShuffleNetV2 as the default exporter writes it: Split of the channels into equal parts, and the channel shuffle
  /// as Reshape to [N, 2, C/2, H, W], Transpose [0, 2, 1, 3, 4] and Reshape back; it runs as the reference does.
  @Test func channelSplitAndShuffleImport() throws {
    var b = ONNXBuilder(inputDims: [4, 3, 3])
    b.int64Initializer("halves", [2, 2])
    b.node("Split", ["input", "halves"], outputs: ["left", "right"], [("axis", .int(1))])
    b.node("Relu", ["right"], "r")
    b.node("Concat", ["left", "r"], "cat", [("axis", .int(1))])
    b.int64Initializer("view", [-1, 2, 2, 3, 3])
    b.node("Reshape", ["cat", "view"], "v")
    b.node("Transpose", ["v"], "t", [("perm", .ints([0, 2, 1, 3, 4]))])
    b.int64Initializer("back", [-1, 4, 3, 3])
    b.node("Reshape", ["t", "back"], "s")
    b.node("Flatten", ["s"], "f")
    try expectSplitReluShuffle(try ONNXImport.translate(b.data(outputDims: [nil, 36]), path: "m.onnx"))
    // A Transpose anywhere else is refused by name.
    var bad = ONNXBuilder(inputDims: [4, 3, 3])
    bad.node("Transpose", ["input"], "t", [("perm", .ints([0, 1, 3, 2]))])
    bad.node("Flatten", ["t"], "f")
    #expect { _ = try ONNXImport.translate(bad.data(outputDims: [nil, 36]), path: "bad.onnx") } throws: { "\($0)".contains("Transpose only in a channel shuffle") }
  }

  /// ShuffleNetV2 as the TorchScript exporter writes it: `x.chunk(2, 1)` as two Slices at bounds computed from the
  /// channel count ((C + 1) / 2 * k), the shuffle's 5-D target computed from the shape too; the same network.
  @Test func channelSliceAtComputedBoundsImport() throws {
    var b = ONNXBuilder(inputDims: [4, 3, 3])
    for (name, v) in [("zero", 0), ("one", 1), ("two", 2), ("three", 3)] { b.int64Initializer(name, [v]) }
    b.node("Shape", ["input"], "shape")
    b.node("Gather", ["shape", "one"], "c", [("axis", .int(0))])
    b.node("Add", ["c", "one"], "c1")
    b.node("Div", ["c1", "two"], "half")
    b.node("Mul", ["half", "one"], "end1")
    b.node("Mul", ["half", "two"], "end2")
    b.node("Slice", ["input", "zero", "end1", "one"], "left")
    b.node("Slice", ["input", "end1", "end2", "one"], "right")
    b.node("Relu", ["right"], "r")
    b.node("Concat", ["left", "r"], "cat", [("axis", .int(1))])
    b.node("Shape", ["cat"], "catShape")
    for (i, index) in ["zero", "one", "two", "three"].enumerated() { b.node("Gather", ["catShape", index], "d\(i)", [("axis", .int(0))]) }
    b.node("Div", ["d1", "two"], "perGroup")
    b.node("Cast", ["perGroup"], "perGroupInt", [("to", .int(7))])
    b.node("Concat", ["d0", "two", "perGroupInt", "d2", "d3"], "view", [("axis", .int(0))])
    b.node("Reshape", ["cat", "view"], "v")
    b.node("Transpose", ["v"], "t", [("perm", .ints([0, 2, 1, 3, 4]))])
    b.int64Initializer("back", [-1, 4, 3, 3])
    b.node("Reshape", ["t", "back"], "s")
    b.node("Flatten", ["s"], "f")
    try expectSplitReluShuffle(try ONNXImport.translate(b.data(outputDims: [nil, 36]), path: "m.onnx"))
    // A Slice that is not an equal part of the channel count (constant bounds, or from channel 1 to the middle) is refused.
    for (start, end) in [("zero", "two"), ("one", "c1")] {
      var bad = ONNXBuilder(inputDims: [4, 3, 3])
      for (name, v) in [("zero", 0), ("one", 1), ("two", 2)] { bad.int64Initializer(name, [v]) }
      bad.node("Shape", ["input"], "shape")
      bad.node("Gather", ["shape", "one"], "c", [("axis", .int(0))])
      bad.node("Div", ["c", "two"], "c1")
      bad.node("Slice", ["input", start, end, "one"], "part")
      bad.node("Flatten", ["part"], "f")
      #expect { _ = try ONNXImport.translate(bad.data(outputDims: [nil, 18]), path: "bad.onnx") } throws: {
        "\($0)".contains("(Slice): slices channels at bounds cnnc cannot read as equal parts")
      }
    }
  }

  /// GELU as both exporters write it: opset 20's Gelu, and before it the formula (the half first or last); a part
  /// of the formula that is not completed, and the tanh approximation, are refused by name.
  @Test func geluImportsFromItsFormula() throws {
    func model(_ build: (inout ONNXBuilder) -> Void) -> Data {
      var b = ONNXBuilder(inputDims: [2, 3, 3])
      build(&b)
      b.node("Flatten", [b.output], "f")
      return b.data(outputDims: [nil, 18])
    }
    func scalars(_ b: inout ONNXBuilder) {
      for (name, v) in [("sqrt2", Float(2).squareRoot()), ("one", 1), ("half", 0.5)] { b.initializer(name, dims: [], values: [v]) }
    }
    let forms = [
      model { $0.node("Gelu", ["input"], "g") },
      model { b in
        scalars(&b)
        b.node("Div", ["input", "sqrt2"], "s"); b.node("Erf", ["s"], "e"); b.node("Add", ["e", "one"], "e1")
        b.node("Mul", ["input", "e1"], "p"); b.node("Mul", ["p", "half"], "g")
      },
      model { b in
        scalars(&b)
        b.node("Mul", ["input", "half"], "h"); b.node("Div", ["input", "sqrt2"], "s"); b.node("Erf", ["s"], "e")
        b.node("Add", ["one", "e"], "e1"); b.node("Mul", ["e1", "h"], "g")
      },
    ]
    for data in forms {
      let m = try ONNXImport.translate(data, path: "m.onnx")
      #expect(m.graph.nodes.map(\.op.spelling).prefix(2) == ["gelu", "flatten"], "\(m.text)")
    }
    let unfinished = model { b in
      scalars(&b)
      b.node("Mul", ["input", "half"], "h")
      b.node("Relu", ["h"], "r")
    }
    #expect { _ = try ONNXImport.translate(unfinished, path: "bad.onnx") } throws: { "\($0)".contains("is part of a GELU formula") }
    let tanh = model { $0.node("Gelu", ["input"], "g", [("approximate", .string("tanh"))]) }
    #expect { _ = try ONNXImport.translate(tanh, path: "bad.onnx") } throws: { "\($0)".contains("approximate 'tanh'") }
  }

  /// Checks a model of split channels, the second half through relu, joined and shuffled in 2 groups, on the
  /// reference interpreter: input channels 0..3 -> [0, 1], relu([2, 3]) -> [0, 1, 2', 3'] -> [0, 2', 1, 3'].
  func expectSplitReluShuffle(_ m: ImportedModel) throws {
    #expect(m.graph.nodes.map(\.op.spelling).filter { ["chunk", "channel_shuffle"].contains($0) } == ["chunk", "chunk", "channel_shuffle"], "\(m.text)")
    let x: [Float] = (0..<36).map { (i: Int) -> Float in Float(i % 9) - 4 + Float(i / 9) * 0.5 }
    let g = prunedToOutput(m.graph), shapes = try inferShapes(g, batch: 1)
    let out = try Interpreter<Float>(graph: g, shapes: shapes).run(inputs: ["image": .f32(Tensor(shape: [1, 4, 3, 3], data: x)), "label": .i32(shape: [1], data: [0])],
                                                                   parameters: [:], context: ReferenceContext(training: false))[g.output!]!.tensor!.data
    let relu: [Float] = x.map { max($0, 0) }
    var expected: [Float] = Array(x[0..<9])
    expected += relu[18..<27]
    expected += x[9..<18]
    expected += relu[27..<36]
    #expect(out == expected)
  }

  /// An eval-mode export folds each batch norm into the conv before it (a bias the exporter made, `NAME.weight_bias`
  /// from the default exporter): the import says once that the model then trains without batch norm.
  @Test func batchNormFoldedByTheExporterIsNoted() throws {
    var b = ONNXBuilder(inputDims: [1, 4, 4])
    b.initializer("conv1.weight", dims: [3, 1, 4, 4], values: (0..<48).map { Float($0 % 7) * 0.1 })
    b.initializer("conv1.weight_bias", dims: [3], values: [0.1, 0.2, 0.3])
    b.node("Conv", ["input", "conv1.weight", "conv1.weight_bias"], "c")
    b.node("Flatten", ["c"], "f")
    let m = try ONNXImport.translate(b.data(outputDims: [nil, 3]), path: "m.onnx")
    #expect(m.notes.count == 1 && m.notes[0].contains("1 convs have weights and biases the exporter computed") && m.notes[0].contains("TrainingMode.PRESERVE"),
            "\(m.notes)")
  }
}
