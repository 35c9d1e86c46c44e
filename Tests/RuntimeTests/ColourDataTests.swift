import CNNCTestSupport
import Foundation
import Runtime
import Testing

/// CIFAR-10 and CIFAR-100 binary files: loaded planar per channel with their labels, normalised per
/// channel, and refused with one clear error when truncated, missing or of another format.
@Suite struct ColourDataTests {
  static func tempDir() -> String { DataAndCheckpointTests.tempDir() }

  /// `count` records: label bytes (CIFAR-100: coarse = label / 5, fine = label), then the red plane all
  /// `label`, the green plane all 100, the blue plane all 200 + index % 50.
  static func records(_ count: Int, labelBytes: Int, first: Int = 0) -> Data {
    var d = Data()
    for i in first..<(first + count) {
      let label = UInt8(i % 10)
      if labelBytes == 2 { d.append(label / 5) }
      d.append(label)
      d.append(Data(repeating: label, count: 1024))
      d.append(Data(repeating: 100, count: 1024))
      d.append(Data(repeating: UInt8(200 + i % 50), count: 1024))
    }
    return d
  }

  static func error(_ body: () throws -> Void) -> String { DataAndCheckpointTests.error(body) }

  @Test func cifar10LoadsEveryBatchInOrderPlanarPerChannel() throws {
    let dir = Self.tempDir()
    for b in 1...5 { try Self.records(4, labelBytes: 1, first: (b - 1) * 4).write(to: URL(fileURLWithPath: "\(dir)/data_batch_\(b).bin")) }
    try Self.records(3, labelBytes: 1).write(to: URL(fileURLWithPath: "\(dir)/test_batch.bin"))
    let train = try ImageDataset.loadSet(directory: dir, training: true)
    let test = try ImageDataset.loadSet(directory: dir, training: false)
    #expect((train.count, train.channels, train.rows, train.cols) == (20, 3, 32, 32))
    #expect(test.count == 3)
    #expect(train.labels == (0..<20).map { UInt8($0 % 10) })
    // Image 13 (label 3): red plane 3, green 100, blue 213.
    let image = Array(train.images[(13 * 3072)..<(14 * 3072)])
    #expect(image[0] == 3 && image[1023] == 3 && image[1024] == 100 && image[2048] == 213 && image[3071] == 213)
    try train.validateImages(forInput: [64, 3, 32, 32])
    #expect(Self.error { try train.validateImages(forInput: [64, 1, 28, 28]) }.contains("gives [N, 3, 32, 32] images"))
  }

  @Test func cifar100ReadsTheFineLabels() throws {
    let dir = Self.tempDir()
    try Self.records(6, labelBytes: 2).write(to: URL(fileURLWithPath: "\(dir)/train.bin"))
    try Self.records(2, labelBytes: 2).write(to: URL(fileURLWithPath: "\(dir)/test.bin"))
    let train = try ImageDataset.loadSet(directory: dir, training: true)
    #expect(train.labels == [0, 1, 2, 3, 4, 5])
    #expect(train.images[4 * 3072] == 4)
  }

  @Test func badCIFARFilesGetOneClearError() throws {
    let dir = Self.tempDir()
    var truncated = Self.records(2, labelBytes: 1)
    truncated.removeLast(100)
    try truncated.write(to: URL(fileURLWithPath: "\(dir)/test_batch.bin"))
    #expect(Self.error { _ = try ImageDataset.loadSet(directory: dir, training: false) }.contains("is not a whole number of 3073-byte CIFAR records"))
    #expect(Self.error { _ = try ImageDataset.loadSet(directory: dir, training: true) }.contains("data_batch_1.bin not found"))
    let empty = Self.tempDir()
    #expect(Self.error { _ = try ImageDataset.loadSet(directory: empty, training: true) }.contains("holds no data set cnnc reads"))
  }

  @Test func normalisationIsPerChannelAndRoundTrips() throws {
    let dir = Self.tempDir()
    try Self.records(10, labelBytes: 1).write(to: URL(fileURLWithPath: "\(dir)/test_batch.bin"))
    let set = try ImageDataset.loadSet(directory: dir, training: false)
    let n = try set.measuredNormalization()
    #expect(n.mean.count == 3)
    #expect(abs(n.mean[0] - 4.5 / 255) < 1e-5 && abs(n.mean[1] - 100 / 255) < 1e-5 && n.std[1] == 1e-6)
    var x = [Float](repeating: 0, count: 3072)
    try set.normalizedBatch([2][...], into: &x, n)
    #expect(abs(x[0] - (2 / 255 - n.mean[0]) / n.std[0]) < 1e-5 && abs(x[2048] - (202 / 255 - n.mean[2]) / n.std[2]) < 1e-4)
    let back = try #require(try Normalization(metadata: n.metadata))
    #expect(back == n)
    #expect(Self.error { try Normalization(means: [0.5, 0.5], stds: [0.2, 0.2]).check(channels: 3) }.contains("2 means and stds; the images have 3 channels"))
    #expect(Normalization.parse("0.49,0.48,0.45", "0.25,0.24,0.26")?.0 == [0.49, 0.48, 0.45])
    #expect(Normalization.parse("0.5,0.5", "0.2") == nil && Normalization.parse("0.5", "0") == nil && Normalization.parse("x", "1") == nil)
  }
}
