import CNNCTestSupport
import Foundation
import Runtime
import Testing

/// PNG folders per class (`train/CLASS/*.png`, `test/CLASS/*.png`): classes numbered in sorted order,
/// files read by name, grey and colour images, and one clear error for every malformed layout.
@Suite struct ImageFolderTests {
  static func tempDir() -> String { DataAndCheckpointTests.tempDir() }
  static func error(_ body: () throws -> Void) -> String { DataAndCheckpointTests.error(body) }

  /// Writes a `side` x `side` PNG whose every pixel is `value` (grey), or (value, 2 * value, 3 * value) (RGB).
  static func write(_ path: String, side: Int = 4, value: UInt8, colour: Bool = false) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    let pixel: [UInt8] = colour ? [value, value &* 2, value &* 3] : [value]
    let png = PNGWriter.encode(width: side, height: side, channels: pixel.count, pixels: Array((0..<(side * side)).map { _ in pixel }.joined()))
    try Data(png).write(to: URL(fileURLWithPath: path))
  }

  @Test func classesAreSortedFoldersAndFilesAreReadByName() throws {
    let dir = Self.tempDir()
    try Self.write("\(dir)/train/dog/b.png", value: 20)
    try Self.write("\(dir)/train/dog/a.png", value: 10)
    try Self.write("\(dir)/train/cat/x.png", value: 30)
    try Self.write("\(dir)/test/dog/t.png", value: 40)
    try Data().write(to: URL(fileURLWithPath: "\(dir)/train/cat/.hidden"))
    let train = try ImageDataset.loadSet(directory: dir, training: true)
    let test = try ImageDataset.loadSet(directory: dir, training: false)
    #expect(try ImageDataset.folderClasses(dir) == ["cat", "dog"])
    #expect((train.count, train.channels, train.rows, train.cols) == (3, 1, 4, 4))
    #expect(train.labels == [0, 1, 1])
    #expect(train.images.enumerated().allSatisfy { i, v in v == [30, 10, 20][i / 16] })
    #expect(test.labels == [1] && test.images.allSatisfy { $0 == 40 })
    try train.validateImages(forInput: [8, 1, 4, 4])
  }

  /// One colour image makes the set three-channel: colour images planar (R, G, B), grey ones replicated.
  @Test func colourImagesArePlanarAndGreyOnesAreReplicated() throws {
    let dir = Self.tempDir()
    try Self.write("\(dir)/train/a/1.png", value: 5, colour: true)
    try Self.write("\(dir)/train/b/1.png", value: 7)
    try Self.write("\(dir)/val/a/1.png", value: 9, colour: true)
    let train = try ImageDataset.loadSet(directory: dir, training: true)
    #expect(train.channels == 3)
    #expect(Array(train.images[0..<48]) == [UInt8](repeating: 5, count: 16) + [UInt8](repeating: 10, count: 16) + [UInt8](repeating: 15, count: 16))
    #expect(Array(train.images[48..<96]) == [UInt8](repeating: 7, count: 48))
    #expect(try ImageDataset.loadSet(directory: dir, training: false).count == 1)
    let m = try train.measuredNormalization()
    #expect(m.mean.count == 3)
  }

  @Test func malformedFoldersGetOneClearError() throws {
    let sizes = Self.tempDir()
    try Self.write("\(sizes)/train/a/1.png", side: 4, value: 1)
    try Self.write("\(sizes)/train/a/2.png", side: 5, value: 1)
    #expect(Self.error { _ = try ImageDataset.loadSet(directory: sizes, training: true) }.contains("2.png is 5x5, but the images before it are 4x4"))
    #expect(Self.error { _ = try ImageDataset.loadSet(directory: sizes, training: false) }.contains("no test/ or val/ folder for evaluation"))

    let stray = Self.tempDir()
    try Self.write("\(stray)/train/a/1.png", value: 1)
    try Self.write("\(stray)/test/zebra/1.png", value: 1)
    #expect(Self.error { _ = try ImageDataset.loadSet(directory: stray, training: false) }.contains("zebra is not one of the training classes (a)"))

    let jpeg = Self.tempDir()
    try Self.write("\(jpeg)/train/a/1.png", value: 1)
    try Data([0xFF, 0xD8, 0xFF]).write(to: URL(fileURLWithPath: "\(jpeg)/train/a/2.jpg"))
    #expect(Self.error { _ = try ImageDataset.loadSet(directory: jpeg, training: true) }.contains("2.jpg: truncated or corrupt JPEG header"))
    try FileManager.default.removeItem(atPath: "\(jpeg)/train/a/2.jpg")
    try Data("GIF89a".utf8).write(to: URL(fileURLWithPath: "\(jpeg)/train/a/3.gif"))
    #expect(Self.error { _ = try ImageDataset.loadSet(directory: jpeg, training: true) }.contains("3.gif: only PNG and JPEG images are read"))

    let broken = Self.tempDir()
    try Self.write("\(broken)/train/a/1.png", value: 1)
    try Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0]).write(to: URL(fileURLWithPath: "\(broken)/train/a/2.png"))
    #expect(Self.error { _ = try ImageDataset.loadSet(directory: broken, training: true) }.contains("2.png:"))

    let empty = Self.tempDir()
    try FileManager.default.createDirectory(atPath: "\(empty)/train", withIntermediateDirectories: true)
    #expect(Self.error { _ = try ImageDataset.loadSet(directory: empty, training: true) }.contains("holds no class folders"))
    try FileManager.default.createDirectory(atPath: "\(empty)/train/a", withIntermediateDirectories: true)
    #expect(Self.error { _ = try ImageDataset.loadSet(directory: empty, training: true) }.contains("holds no PNG or JPEG images in its class folders"))
  }
}
