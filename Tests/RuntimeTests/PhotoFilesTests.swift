import CNNCTestSupport
import Foundation
import Runtime
import Testing

/// Photo folders streamed from disk (`PhotoFiles`): each photo read per batch through the transforms, exactly as
/// reading it by hand gives; random transforms drawn per (seed, step, image); subsets, splits and fingerprints
/// without reading the photos; a photo that breaks mid-run is one error naming it.
@Suite struct PhotoFilesTests {
  /// Writes a `width` x `height` RGB PNG of a pattern that changes with position (so crops and resizes show).
  static func photo(_ path: String, width: Int, height: Int, seed: Int) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    let pixels = (0..<(width * height)).flatMap { i in (0..<3).map { c in UInt8(truncatingIfNeeded: (i % width) * 13 + (i / width) * 7 + c * 50 + seed * 31) } }
    try Data(PNGWriter.encode(width: width, height: height, channels: 3, pixels: pixels)).write(to: URL(fileURLWithPath: path))
  }

  /// Three photos of three sizes in two classes, and one test photo.
  static func folder() throws -> String {
    let dir = ImageFolderTests.tempDir()
    try photo("\(dir)/train/a/1.png", width: 12, height: 9, seed: 1)
    try photo("\(dir)/train/a/2.png", width: 7, height: 15, seed: 2)
    try photo("\(dir)/train/b/1.png", width: 20, height: 20, seed: 3)
    try photo("\(dir)/test/b/1.png", width: 10, height: 11, seed: 4)
    return dir
  }

  static let transforms: [ImageTransform] = [.resize(7), .centerCrop(height: 6, width: 6)]

  @Test func aStreamedSetReadsEachPhotoAsReadingItByHandDoes() throws {
    let dir = try Self.folder()
    let set = try ImageDataset.loadSet(directory: dir, training: true, transforms: Self.transforms, channels: 3)
    #expect(set.isStreamed && set.images.isEmpty)
    #expect((set.count, set.channels, set.rows, set.cols, set.labels) == (3, 3, 6, 6, [0, 0, 1]))
    var batch = [Float](repeating: .nan, count: 3 * set.imageBytes)
    try set.normalizedBatch([2, 0, 1][...], into: &batch, .imagenet)
    for (j, name) in ["b/1", "a/1", "a/2"].enumerated() {
      let byHand = try ImageFile.read("\(dir)/train/\(name).png", transforms: Self.transforms, channels: 3, height: 6, width: 6)
      let expected = byHand.pixels.enumerated().map { k, v in (Float(v) / 255 - Normalization.imagenet.mean[k / 36]) / Normalization.imagenet.std[k / 36] }
      expectClose(Array(batch[(j * 108)..<((j + 1) * 108)]), expected, rtol: 1e-5, atol: 1e-5, name)
    }
    // A grey model's set: the photos' luma.
    let grey = try ImageDataset.loadSet(directory: dir, training: false, transforms: Self.transforms, channels: 1)
    var rng = SeededRandom(seed: 0)
    #expect(try grey.pixels(0, &rng) == ImageFile.read("\(dir)/test/b/1.png", transforms: Self.transforms, channels: 1, height: 6, width: 6).pixels)
  }

  /// random_resized_crop draws from the image's generator (seed, step, position in the batch), then the rest of the
  /// augmentation from the same generator: the same bytes every time, other bytes at another step.
  @Test func randomCropsDrawPerStepAndImage() throws {
    let dir = try Self.folder()
    let augmentation = try Augmentation(parsing: "random_resized_crop:5")
    let set = try ImageDataset.loadSet(directory: dir, training: true, transforms: augmentation.photoTransforms, channels: 3)
    #expect(set.isStreamed && (set.rows, set.cols) == (5, 5))
    func batch(step: Int) throws -> [Float] {
      var out = [Float](repeating: .nan, count: 3 * set.imageBytes)
      try set.augmentedBatch([0, 1, 2][...], into: &out, .mnist, augmentation, seed: 4, step: step)
      return out
    }
    let (a, b) = (try batch(step: 3), try batch(step: 3))
    #expect(a.map(\.bitPattern) == b.map(\.bitPattern) && a.allSatisfy(\.isFinite))
    #expect(a != (try batch(step: 4)))
    for (j, name) in ["a/1", "a/2", "b/1"].enumerated() {
      var rng = Augmentation.generator(seed: 4, step: 3, index: j)
      let crop = try ImageTransform.randomResizedCrop(height: 5, width: 5).apply(try ImageFile.read("\(dir)/train/\(name).png"), &rng)
      let expected = crop.pixels.map { (Float($0) / 255 - 0.1307) / 0.3081 }
      expectClose(Array(a[(j * 75)..<((j + 1) * 75)]), expected, rtol: 1e-5, atol: 1e-5, name)
    }
    #expect(throws: DataError.self) { try Augmentation(parsing: "flip,random_resized_crop:5") }
    // A data set of one image size held in memory takes crop:PAD, not random_resized_crop.
    #expect(ImageFolderTests.error { _ = try ImageDataset.loadSet(directory: Fixtures.root.appendingPathComponent("data/mnist").path, training: false, transforms: augmentation.photoTransforms) }
      .contains("random_resized_crop reads photo folders"))
  }

  @Test func subsetsSplitsAndFingerprintsKeepToThePaths() throws {
    let dir = try Self.folder()
    let set = try ImageDataset.loadSet(directory: dir, training: true, transforms: Self.transforms, channels: 3)
    let (first, rest) = set.split(first: 1)
    #expect(first.files?.paths == ["\(dir)/train/a/1.png"] && rest.files?.paths.count == 2 && rest.labels == [0, 1])
    let picked = set.subset([2, 0])
    #expect(picked.labels == [1, 0] && picked.isStreamed && picked.classNames == ["a", "b"])
    let print = set.fingerprint()
    #expect(print == (try ImageDataset.loadSet(directory: dir, training: true, transforms: Self.transforms, channels: 3)).fingerprint())
    #expect(print != (try ImageDataset.loadSet(directory: dir, training: true, transforms: [.resize(8), .centerCrop(height: 6, width: 6)], channels: 3)).fingerprint())
    try Self.photo("\(dir)/train/a/2.png", width: 30, height: 15, seed: 2)
    #expect(print != (try ImageDataset.loadSet(directory: dir, training: true, transforms: Self.transforms, channels: 3)).fingerprint())
  }

  /// A photo that breaks after the folder was listed is an error naming it, when its batch is read.
  @Test func aPhotoBrokenMidRunIsOneErrorNamingIt() throws {
    let dir = try Self.folder()
    let set = try ImageDataset.loadSet(directory: dir, training: true, transforms: Self.transforms, channels: 3)
    try Data([0xFF, 0xD8, 0xFF, 0xE0, 0, 3]).write(to: URL(fileURLWithPath: "\(dir)/train/a/2.png"))
    var out = [Float](repeating: 0, count: 3 * set.imageBytes)
    #expect(ImageFolderTests.error { try set.normalizedBatch([0, 1, 2][...], into: &out, .mnist) }.contains("\(dir)/train/a/2.png"))
    try FileManager.default.removeItem(atPath: "\(dir)/train/b/1.png")
    #expect(ImageFolderTests.error { try set.normalizedBatch([2][...], into: &out, .mnist) }.contains("\(dir)/train/b/1.png"))
  }
}
