import CNNCTestSupport
import Foundation
import Runtime
import Testing

/// The JPEG reader (through libjpeg-turbo) behind image folders and `cnnc predict`, on the fixtures
/// `Scripts/fixtures/make_images.py` wrote: four flat quadrants, red, green, blue and white, 32x16.
@Suite struct JPEGTests {
  static func bytes(_ name: String) throws -> [UInt8] {
    try [UInt8](Data(contentsOf: Fixtures.root.appendingPathComponent("Tests/Fixtures/images/\(name)")))
  }

  /// The largest difference between two images of one size and channel count.
  static func largestDifference(_ a: PlanarImage, _ b: PlanarImage) -> Int {
    zip(a.pixels, b.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 0
  }

  /// Baseline, progressive and 4:2:0 files give the reference decoder's pixels (`NAME.decoded.png`), and, lossy as
  /// they are, the picture they were made from.
  @Test(arguments: ["colour", "progressive", "subsampled"]) func colourFilesDecodeAsTheReferenceDoes(_ name: String) throws {
    let image = try JPEG.decodePlanar(try Self.bytes("\(name).jpg"), path: name)
    let reference = try PNG.decodePlanar(try Self.bytes("\(name).decoded.png"), path: name)
    let picture = try PNG.decodePlanar(try Self.bytes("colour.png"), path: "colour.png")
    #expect(image.width == 32 && image.height == 16 && image.channels == 3)
    #expect(Self.largestDifference(image, reference) <= 1, "\(name): \(Self.largestDifference(image, reference))")
    // The red quadrant's centre.
    #expect(abs(Int(image.pixels[4 * 32 + 8]) - Int(picture.pixels[4 * 32 + 8])) <= 4 && image.pixels[2 * 512 + 4 * 32 + 8] < 50, "\(name)")
  }

  @Test func greyFilesDecodeToOnePlane() throws {
    let image = try JPEG.decodePlanar(try Self.bytes("grey.jpg"), path: "grey.jpg")
    let reference = try PNG.decodePlanar(try Self.bytes("grey.decoded.png"), path: "grey.decoded.png")
    #expect(image.channels == 1 && reference.channels == 1 && image.width == 32 && image.height == 16)
    #expect(Self.largestDifference(image, reference) <= 1, "\(Self.largestDifference(image, reference))")
  }

  /// Each EXIF orientation gives the upright picture the reference's own transpose gives (5-8 swap the sides).
  @Test(arguments: 1...8) func exifOrientationIsHonoured(_ o: Int) throws {
    let image = try ImageFile.decode(try Self.bytes("orientation\(o).jpg"), path: "orientation\(o).jpg")
    let upright = try PNG.decodePlanar(try Self.bytes("orientation\(o).png"), path: "orientation\(o).png")
    #expect((image.width, image.height) == (upright.width, upright.height), "orientation \(o)")
    #expect((image.width, image.height) == (o >= 5 ? (16, 32) : (32, 16)), "orientation \(o)")
    #expect(Self.largestDifference(image, upright) <= 2, "orientation \(o): \(Self.largestDifference(image, upright))")
  }

  @Test func damagedFilesAreOneClearError() throws {
    let jpeg = try Self.bytes("colour.jpg")
    func message(_ bytes: [UInt8]) -> String? {
      do {
        _ = try ImageFile.decode(bytes, path: "photo.jpg")
        return nil
      } catch let e as DataError { return e.description } catch { return "\(error)" }
    }
    // Truncated anywhere: in the header, in the scan, before the end marker.
    for cut in [2, 3, 20, 200, jpeg.count / 2, jpeg.count - 2] {
      let m = message(Array(jpeg.prefix(cut)))
      #expect(m?.hasPrefix("photo.jpg: ") == true, "cut at \(cut): \(m ?? "decoded")")
    }
    // Scrambled entropy-coded data.
    var scrambled = jpeg
    for i in stride(from: jpeg.count / 2, to: jpeg.count - 2, by: 3) { scrambled[i] = 0xFF }
    #expect(message(scrambled) != nil)
    #expect(message([0x00, 0x01, 0x02])?.contains("neither a PNG nor a JPEG") == true)
  }

  /// A header that claims 65535x65535 pixels (beyond the decoder's own limit) or 60000x60000 (within it, 10 GB of
  /// RGB) is refused before anything is allocated.
  @Test func absurdSizesAreRefused() throws {
    let jpeg = try Self.bytes("colour.jpg")
    // The baseline frame header (SOF0: FF C0, length, precision, height, width).
    let sof = try #require((0..<(jpeg.count - 1)).first { jpeg[$0] == 0xFF && jpeg[$0 + 1] == 0xC0 })
    for (side, expected) in [(65535, "Maximum supported image dimension"), (60000, "absurd size 60000x60000")] {
      var huge = jpeg
      for i in [sof + 5, sof + 7] { (huge[i], huge[i + 1]) = (UInt8(side >> 8), UInt8(side & 0xFF)) }
      do {
        _ = try JPEG.decodePlanar(huge, path: "huge.jpg")
        Issue.record("a \(side)x\(side) header decoded")
      } catch let e as DataError { #expect(e.description.hasPrefix("huge.jpg: ") && e.description.contains(expected), "\(e)") }
    }
  }

  /// PNG and JPEG files mix in one class folder; the name's ending chooses nothing, the bytes do.
  @Test func foldersMixPNGAndJPEG() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cnnc-jpeg-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    for (split, cls) in [("train", "a"), ("train", "b"), ("test", "a")] {
      try FileManager.default.createDirectory(atPath: "\(dir)/\(split)/\(cls)", withIntermediateDirectories: true)
    }
    try Data(try Self.bytes("colour.jpg")).write(to: URL(fileURLWithPath: "\(dir)/train/a/1.jpg"))
    try Data(try Self.bytes("colour.png")).write(to: URL(fileURLWithPath: "\(dir)/train/a/2.png"))
    try Data(try Self.bytes("progressive.jpg")).write(to: URL(fileURLWithPath: "\(dir)/train/b/3.JPEG"))
    try Data(try Self.bytes("grey.jpg")).write(to: URL(fileURLWithPath: "\(dir)/test/a/4.jpeg"))
    let train = try ImageDataset.loadFolders(directory: dir, training: true)
    #expect(train.count == 3 && train.channels == 3 && train.labels == [0, 0, 1])
    let test = try ImageDataset.loadFolders(directory: dir, training: false)
    #expect(test.count == 1 && test.channels == 1)
    // A PNG named .jpg is read as the PNG it is.
    try Data(try Self.bytes("colour.png")).write(to: URL(fileURLWithPath: "\(dir)/test/a/4.jpeg"))
    #expect(try ImageDataset.loadFolders(directory: dir, training: false).channels == 3)
  }
}
