import FileSystem
import Foundation
import ONNX
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
}
