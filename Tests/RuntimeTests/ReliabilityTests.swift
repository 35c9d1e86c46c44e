import CNNCTestSupport
import Foundation
import GraphIR
import Passes
import Runtime
import Testing

/// The reader and run-directory checks of the reliability work: each malformed input is one clear error.
@Suite struct ReliabilityTests {
  /// A safetensors file from a raw JSON header and data (for shapes no writer would produce).
  static func file(_ header: String, data: Int) -> [UInt8] {
    var h = Array(header.utf8)
    while h.count % 8 != 0 { h.append(0x20) }
    var out = [UInt8]()
    withUnsafeBytes(of: UInt64(h.count).littleEndian) { out += $0 }
    return out + h + [UInt8](repeating: 0, count: data)
  }

  static func message(_ bytes: [UInt8]) -> String {
    do {
      _ = try SafeTensors.parse(bytes, path: "t.safetensors")
      return ""
    } catch { return "\(error)" }
  }

  @Test func safetensorsMustTileTheirData() {
    let good = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
    #expect(Self.message(Self.file(good, data: 8)) == "")
    let overlap = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
    #expect(Self.message(Self.file(overlap, data: 8)).contains("overlaps"))
    #expect(Self.message(Self.file(good, data: 12)).contains("trailing data"))
    let gap = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
    #expect(Self.message(Self.file(gap, data: 8)).contains("gap of 4 bytes"))
    let duplicate = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
    #expect(Self.message(Self.file(duplicate, data: 4)).contains("names 'a' twice"))
    let huge = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[9223372036854775800,9223372036854775804]}}"#
    #expect(Self.message(Self.file(huge, data: 4)).contains("runs past the end"))
  }

  static let graph = try! Parser.parse("""
    input x: f32[N, 4]
    d = dense(x, units: 2)
    output d
    """, defaultName: "t")

  @Test func nonFiniteWeightsAreRefused() throws {
    var p = Parameters(graph: Self.graph, shapes: try inferShapes(Self.graph, batch: 1), seed: 1)
    var st = p.safeTensors(metadata: [:])
    st.tensors["d.bias"]!.data[1] = .nan
    #expect(throws: CheckpointError.self) { try p.load(st, path: "w") }
    do { try p.load(st, path: "w") } catch { #expect("\(error)".contains("'d.bias' holds nan at element 1")) }
  }

  @Test func optimiserStateMustCoverEveryParameterAfterTheFirstStep() throws {
    let p = Parameters(graph: Self.graph, shapes: try inferShapes(Self.graph, batch: 1), seed: 1)
    var st = SafeTensors(metadata: ["cnnc.optimizer": "adam", "cnnc.step": "7"])
    st.tensors["m.d.weight"] = ([2, 4], [Float](repeating: 0, count: 8))
    do {
      _ = try OptimizerCheckpoint(st, path: "o", parameters: p, kind: .adam, momentum: 0)
      Issue.record("missing state must be refused")
    } catch { #expect("\(error)".contains("lacks the optimiser state v.d.weight, m.d.bias, v.d.bias")) }
    // At step 0 there is no state yet, and that is fine.
    _ = try OptimizerCheckpoint(SafeTensors(metadata: ["cnnc.optimizer": "adam", "cnnc.step": "0"]), path: "o", parameters: p, kind: .adam, momentum: 0)
    #expect(throws: CheckpointError.self) { _ = try OptimizerCheckpoint(st, path: "o", parameters: p, kind: .sgd, momentum: 0.9) }
  }

  @Test func pngChunksAreCRCChecked() throws {
    var png = try [UInt8](Data(contentsOf: Fixtures.root.appendingPathComponent("Tests/Fixtures/seven.png")))
    // A pixel byte inside the IDAT chunk: the zlib stream may still inflate, the CRC does not match.
    png[png.count - 20] ^= 0x01
    do {
      _ = try PNG.decode(png, path: "x.png")
      Issue.record("a damaged chunk must be refused")
    } catch { #expect("\(error)".contains("fails its CRC check")) }
  }

  @Test func readersRefuseFIFOsAndDirectories() throws {
    let dir = NSTemporaryDirectory() + "cnnc-fifo-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let fifo = dir + "/train-images-idx3-ubyte"
    #expect(mkfifo(fifo, 0o644) == 0)
    do { _ = try ImageDataset.readMaybeGzipped(fifo); Issue.record("a FIFO must be refused") } catch { #expect("\(error)".contains("is a FIFO")) }
    do { _ = try SafeTensors.read(from: dir); Issue.record("a directory must be refused") } catch { #expect("\(error)".contains("is a directory")) }
  }

  @Test func imagesOfTheWrongSizeAreRefused() {
    let set = ImageDataset(images: [UInt8](repeating: 0, count: 2 * 196), labels: [0, 1], count: 2, rows: 14, cols: 14, path: "small")
    #expect(throws: DataError.self) { try set.validateImages(forInput: [1, 1, 28, 28]) }
    #expect(throws: DataError.self) { try set.validateImages(forInput: [1, 3, 14, 14]) }
    #expect(throws: Never.self) { try set.validateImages(forInput: [1, 1, 14, 14]) }
  }

  @Test func aRunDirectoryKeepsTwoCompleteCheckpoints() throws {
    let dir = NSTemporaryDirectory() + "cnnc-run-\(UUID().uuidString)"
    let run = RunDirectory(dir)
    for step in [5, 10, 15] { try run.save(step: step, files: [("a.txt", Array("\(step)".utf8))]) }
    #expect(run.checkpointSteps() == [15, 10])
    #expect(try String(contentsOfFile: dir + "/a.txt", encoding: .utf8) == "15")
    // What a killed run leaves is removed by the next one.
    try FileManager.default.createDirectory(atPath: dir + "/checkpoints/.tmp-step-000000000020-99", withIntermediateDirectories: true)
    _ = FileManager.default.createFile(atPath: dir + "/.weights.safetensors.tmp-99", contents: Data())
    run.removeStaleTemporaries()
    let left = try FileManager.default.contentsOfDirectory(atPath: dir).sorted() + FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints").sorted()
    #expect(left == ["a.txt", "checkpoints", "step-000000000010", "step-000000000015"])
  }

  @Test func aSecondLockOnARunDirectoryIsRefused() throws {
    let dir = NSTemporaryDirectory() + "cnnc-lock-\(UUID().uuidString)"
    let first = try RunLock(directory: dir)
    // flock locks belong to open file descriptions, so a second open in this process conflicts too.
    do { _ = try RunLock(directory: dir); Issue.record("the second lock must be refused") } catch {
      #expect("\(error)".contains("in use by another cnnc run (PID \(getpid()))"))
    }
    withExtendedLifetime(first) {}
  }
}
