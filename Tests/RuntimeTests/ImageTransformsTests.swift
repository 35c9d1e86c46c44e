import CNNCTestSupport
import Foundation
import Runtime
import Testing

/// `--transform` and `--augment`'s photo steps against torchvision's outputs on the same images
/// (`Scripts/fixtures/make_transforms.py` wrote them; `make transforms-check` rewrites them with the installed
/// torchvision and points CNNC_TRANSFORM_FIXTURES here).
@Suite struct ImageTransformsTests {
  static let fixtures = ProcessInfo.processInfo.environment["CNNC_TRANSFORM_FIXTURES"]
    ?? Fixtures.root.appendingPathComponent("Tests/Fixtures/transforms").path

  static func image(_ name: String) throws -> PlanarImage {
    try PNG.decodePlanar([UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/\(name)"))), path: name)
  }

  static func cases() throws -> [[String: Any]] {
    try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/manifest.json"))) as! [[String: Any]]
  }

  /// Every case within 1/255 per pixel of torchvision: crops are the same bytes, and so are resizes but where the
  /// reference resamples the columns before the rows (both passes round to 8 bits; one level apart at most).
  @Test func transformsMatchTorchvision() throws {
    let cases = try Self.cases()
    #expect(cases.count >= 10)
    for c in cases {
      let input = try Self.image(c["input"] as! String), expected = try Self.image(c["expected"] as! String)
      var rng = SeededRandom(seed: 1)
      let out: PlanarImage
      if let spec = c["transform"] as? String {
        out = try ImageTransform.parse(spec, option: "--transform").apply(input, &rng)
      } else {
        let w = c["window"] as! [Int], size = c["size"] as! Int
        out = ImageTransform.resizedCrop(input, window: (w[0], w[1], w[2], w[3]), height: size, width: size)
      }
      let what = "\(c["input"]!) \(c["transform"] ?? c["window"]!)"
      #expect((out.width, out.height, out.channels) == (expected.width, expected.height, expected.channels), "\(what)")
      let worst = zip(out.pixels, expected.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 0
      #expect(worst <= 1, "\(what): \(worst) levels apart")
    }
  }

  @Test func specsParseAndPrintBack() throws {
    let t = try ImageTransform.parse("resize:256,center_crop:224", option: "--transform")
    #expect(t == [.resize(256), .centerCrop(height: 224, width: 224)] && t.spec == "resize:256,center_crop:224")
    #expect(t.outputSize! == (224, 224))
    #expect(try ImageTransform.parse("random_resized_crop:160x128,flip", option: "--augment").outputSize! == (160, 128))
    #expect(try ImageTransform.parse("resize:256", option: "--transform").outputSize == nil)
    for bad in ["resize", "resize:0", "resize:9000", "center_crop:ax3", "spin:3", "flip:1", "", "resize:2x3x4"] {
      #expect(throws: DataError.self, "\(bad)") { _ = try ImageTransform.parse(bad, option: "--transform") }
    }
  }

  /// A resize that would make a thin image enormous (resize:8192 of a 200:1 strip) is one error naming the file.
  @Test func absurdResizesAreRefused() throws {
    var rng = SeededRandom(seed: 1)
    let strip = PlanarImage(width: 400, height: 2, channels: 1, pixels: [UInt8](repeating: 9, count: 800))
    do {
      _ = try [ImageTransform.resize(8192)].apply(strip, &rng, path: "strip.png")
      Issue.record("a 1.6-gigapixel resize was made")
    } catch let e as DataError { #expect(e.description.hasPrefix("strip.png: resize:8192 would make its 400x2 pixels 1638400 long"), "\(e)") }
    #expect(try [ImageTransform.resize(4)].apply(strip, &rng).width == 800)
  }

  /// The random crop's windows stay inside the image, cover 8% to all of it, keep the ratio range, and come from the
  /// seed alone; the flip mirrors about half of the draws.
  @Test func randomStepsAreSeededAndInRange() throws {
    var a = SeededRandom(seed: 5), b = SeededRandom(seed: 5)
    var shares: [Double] = []
    for _ in 0..<500 {
      let w = ImageTransform.cropWindow(width: 200, height: 120, &a)
      #expect(w == ImageTransform.cropWindow(width: 200, height: 120, &b))
      #expect(w.top >= 0 && w.left >= 0 && w.top + w.height <= 120 && w.left + w.width <= 200, "\(w)")
      let ratio = Double(w.width) / Double(w.height)
      #expect(ratio > 0.7 && ratio < 1.4, "\(w)")
      shares.append(Double(w.width * w.height) / Double(200 * 120))
    }
    #expect(shares.min()! < 0.15 && shares.max()! > 0.6 && shares.allSatisfy { $0 >= 0.07 && $0 <= 1.0 })
    // A thin strip fits no window of the ratio range: the centre, clamped to 4/3.
    var r = SeededRandom(seed: 1)
    let strip = ImageTransform.cropWindow(width: 400, height: 30, &r)
    #expect(strip.height == 30 && strip.width == 40 && strip.left == 180, "\(strip)")
    let picture = try Self.image("landscape.png")
    var flips = SeededRandom(seed: 3), mirrored = 0
    for _ in 0..<200 where try ImageTransform.flip.apply(picture, &flips).pixels != picture.pixels { mirrored += 1 }
    #expect(mirrored > 70 && mirrored < 130, "\(mirrored) of 200")
  }
}
