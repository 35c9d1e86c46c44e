import CNNCTestSupport
import Foundation
import GraphIR
import Passes
import Runtime
import Testing

/// Bad data and checkpoint files give clear errors, never crashes; good ones round-trip.
@Suite struct DataAndCheckpointTests {
  static func tempDir() -> String {
    let d = NSTemporaryDirectory() + "cnnc-test-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
  }

  static func idx(magic: UInt32, dims: [UInt32], payload: Int) -> Data {
    var d = Data()
    for v in [magic] + dims { withUnsafeBytes(of: v.bigEndian) { d.append(contentsOf: $0) } }
    d.append(Data(repeating: 3, count: payload))
    return d
  }

  static func write(_ dir: String, images: Data, labels: Data) {
    _ = FileManager.default.createFile(atPath: dir + "/t10k-images-idx3-ubyte", contents: images)
    _ = FileManager.default.createFile(atPath: dir + "/t10k-labels-idx1-ubyte", contents: labels)
  }

  static func error(_ body: () throws -> Void) -> String {
    do {
      try body()
      return ""
    } catch {
      return "\(error)"
    }
  }

  @Test func bundledMNISTLoads() throws {
    let test = try ImageDataset.load(directory: Fixtures.root.appendingPathComponent("data/mnist").path, split: "t10k")
    #expect(test.count == 10_000 && test.rows == 28 && test.cols == 28)
    #expect(test.labels.prefix(5) == [7, 2, 1, 0, 4])
  }

  @Test func rawIDXFilesLoadAndBadOnesAreRejected() {
    let dir = Self.tempDir()
    Self.write(dir, images: Self.idx(magic: 0x803, dims: [2, 2, 2], payload: 8), labels: Self.idx(magic: 0x801, dims: [2], payload: 2))
    #expect(Self.error { _ = try ImageDataset.load(directory: dir, split: "t10k") } == "")

    Self.write(dir, images: Self.idx(magic: 0x803, dims: [2, 2, 2], payload: 7), labels: Self.idx(magic: 0x801, dims: [2], payload: 2))
    #expect(Self.error { _ = try ImageDataset.load(directory: dir, split: "t10k") }.contains("(truncated)"))

    Self.write(dir, images: Self.idx(magic: 0x801, dims: [2, 2, 2], payload: 8), labels: Self.idx(magic: 0x801, dims: [2], payload: 2))
    #expect(Self.error { _ = try ImageDataset.load(directory: dir, split: "t10k") }.contains("wrong magic number 0x00000801"))

    Self.write(dir, images: Self.idx(magic: 0x803, dims: [2, 2, 2], payload: 8), labels: Self.idx(magic: 0x801, dims: [3], payload: 3))
    #expect(Self.error { _ = try ImageDataset.load(directory: dir, split: "t10k") }.contains("holds 2 images but"))

    Self.write(dir, images: Self.idx(magic: 0x803, dims: [0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF], payload: 0), labels: Data([0, 0]))
    #expect(Self.error { _ = try ImageDataset.load(directory: dir, split: "t10k") }.contains("absurd dimensions"))

    #expect(Self.error { _ = try ImageDataset.load(directory: dir, split: "train") }.contains("missing data file"))
  }

  @Test func truncatedGzipIsAnError() throws {
    let dir = Self.tempDir()
    let src = Fixtures.root.appendingPathComponent("data/mnist/t10k-labels-idx1-ubyte.gz")
    let gz = try Data(contentsOf: src)
    _ = FileManager.default.createFile(atPath: dir + "/t10k-labels-idx1-ubyte.gz", contents: gz.prefix(gz.count / 2))
    _ = FileManager.default.createFile(atPath: dir + "/t10k-images-idx3-ubyte", contents: Self.idx(magic: 0x803, dims: [10000, 1, 1], payload: 10000))
    let e = Self.error { _ = try ImageDataset.load(directory: dir, split: "t10k") }
    #expect(e.contains("truncated"), "got: \(e)")
  }

  @Test func labelsOutOfRange() {
    let d = ImageDataset(images: [0, 0], labels: [3, 12], count: 2, rows: 1, cols: 1)
    #expect(Self.error { try d.validateLabels(classes: 10) }.contains("label 12 of example 1 is out of range"))
  }

  @Test func safetensorsRoundTripAndDamage() throws {
    let st = SafeTensors(tensors: ["b.weight": ([2, 3], [1, 2, 3, 4, 5, 6]), "a": ([1], [-1])], metadata: ["step": "3"])
    let bytes = st.serialized()
    #expect(try SafeTensors.parse(bytes, path: "x") == st)
    for cut in [0, 7, 8, 20, bytes.count - 1] {
      #expect(Self.error { _ = try SafeTensors.parse(Array(bytes.prefix(cut)), path: "x") }.contains("not a valid safetensors file"))
    }
    var badHeader = bytes
    badHeader[9] = UInt8(ascii: "!")
    #expect(Self.error { _ = try SafeTensors.parse(badHeader, path: "x") }.contains("not a JSON object"))
    var f16 = bytes
    for i in 8..<(bytes.count - 3) where bytes[i..<(i + 3)].elementsEqual("F32".utf8) { f16[i + 1] = UInt8(ascii: "1"); f16[i + 2] = UInt8(ascii: "6") }
    #expect(Self.error { _ = try SafeTensors.parse(f16, path: "x") }.contains("dtype F16"))
    var huge = bytes
    huge.replaceSubrange(0..<8, with: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])
    #expect(Self.error { _ = try SafeTensors.parse(huge, path: "x") }.contains("exceeds the file"))
  }

  /// A node with a `state` prefix saves and loads under PyTorch's dotted keys (counters too); a file under the
  /// node's own names does not fit, and the error names the keys the graph wants.
  @Test func stateNamesAreTheFileKeys() throws {
    let g = try Parser.parse("input x: f32[N, 3]\nlayer1_0_bn = batchnorm(x)\nstate layer1_0_bn \"layer1.0.bn\"\noutput layer1_0_bn\n", defaultName: "bn")
    var p = Parameters(graph: g, shapes: try inferShapes(g, batch: 2), seed: 1)
    p.values["layer1_0_bn.running_mean"] = [0.5, -0.5, 0.25]
    p.counters["layer1_0_bn.num_batches_tracked"] = 7
    let st = p.safeTensors(metadata: [:], stateKey: g.stateKey)
    #expect(Set(st.tensors.keys) == ["layer1.0.bn.weight", "layer1.0.bn.bias", "layer1.0.bn.running_mean", "layer1.0.bn.running_var"])
    #expect(st.integers["layer1.0.bn.num_batches_tracked"]?.data == [7])
    var q = Parameters(graph: g, shapes: try inferShapes(g, batch: 2), seed: 2)
    try q.load(try SafeTensors.parse(st.serialized(), path: "w"), path: "w", stateKey: g.stateKey)
    #expect(q.values == p.values && q.counters == p.counters)
    let plain = p.safeTensors(metadata: [:])
    #expect(Self.error { try q.load(plain, path: "w", stateKey: g.stateKey) }.contains("missing tensors: layer1.0.bn.weight"))
  }

  /// Buffers and 0-d I64 counters (batch norm's `num_batches_tracked`) save and load under PyTorch's names.
  @Test func buffersAndCountersRoundTrip() throws {
    let g = try Parser.parse("input x: f32[N, 3]\nb = batchnorm(x)\noutput b\n", defaultName: "bn")
    var p = Parameters(graph: g, shapes: try inferShapes(g, batch: 2), seed: 1)
    #expect(p.names == ["b.weight", "b.bias"] && p.buffers == ["b.running_mean", "b.running_var"])
    #expect(p.values["b.weight"] == [1, 1, 1] && p.values["b.running_var"] == [1, 1, 1] && p.values["b.running_mean"] == [0, 0, 0])
    p.values["b.running_mean"] = [0.5, -1, 2]
    p.counters["b.num_batches_tracked"] = 41
    let bytes = p.safeTensors(metadata: [:]).serialized()
    let st = try SafeTensors.parse(bytes, path: "x")
    #expect(st.integers["b.num_batches_tracked"]?.shape == [] && st.integers["b.num_batches_tracked"]?.data == [41])
    var q = Parameters(graph: g, shapes: try inferShapes(g, batch: 2), seed: 2)
    try q.load(st, path: "x")
    #expect(q == p)
    var negative = st
    negative.tensors["b.running_var"] = ([3], [1, -1, 1])
    #expect(Self.error { try q.load(negative, path: "w") }.contains("never negative"))
    var noBuffers = st
    noBuffers.tensors["b.running_var"] = nil
    #expect(Self.error { try q.load(noBuffers, path: "w") }.contains("missing tensors: b.running_var"))
  }

  @Test func loadingChecksNamesAndShapes() {
    var p = Parameters(names: ["fc.weight", "fc.bias"], shapes: ["fc.weight": [2, 2], "fc.bias": [2]],
                       values: ["fc.weight": [0, 0, 0, 0], "fc.bias": [0, 0]])
    let st = SafeTensors(tensors: ["fc.weight": ([4], [1, 2, 3, 4]), "extra": ([1], [0])])
    let e = Self.error { try p.load(st, path: "w") }
    #expect(e.contains("missing tensors: fc.bias"))
    #expect(e.contains("unexpected tensors: extra"))
    #expect(e.contains("'fc.weight' has shape [4], the graph needs [2, 2]"))
  }

  @Test func atomicWriteLeavesNoTemporaryFile() throws {
    let dir = Self.tempDir()
    let st = SafeTensors(tensors: ["w": ([2], [1, 2])])
    try st.write(to: dir + "/w.safetensors")
    try st.write(to: dir + "/w.safetensors")
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["w.safetensors"])
    #expect(try SafeTensors.read(from: dir + "/w.safetensors") == st)
  }

  @Test func adamAndSGDFollowTheReferenceFormulas() {
    var p = Parameters(names: ["w"], shapes: ["w": [1]], values: ["w": [1]])
    var adam = Optimizer(kind: .adam, learningRate: 0.1)
    adam.update(&p, gradients: ["w": [0.5]])
    // First Adam step moves by lr * sign(g) (bias-corrected m/sqrt(v) = 1, up to eps).
    #expect(abs(p.values["w"]![0] - 0.9) < 1e-6)
    var q = Parameters(names: ["w"], shapes: ["w": [1]], values: ["w": [1]])
    var sgd = Optimizer(kind: .sgd, learningRate: 0.1, momentum: 0.9, weightDecay: 0.5)
    sgd.update(&q, gradients: ["w": [1]])  // buf = 1 + 0.5*1 = 1.5; w = 1 - 0.15
    #expect(abs(q.values["w"]![0] - 0.85) < 1e-6)
    sgd.update(&q, gradients: ["w": [1]])  // buf = 0.9*1.5 + 1 + 0.5*0.85 = 2.775; w = 0.85 - 0.2775
    #expect(abs(q.values["w"]![0] - 0.5725) < 1e-6)
  }
}
