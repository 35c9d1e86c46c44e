import CNNCTestSupport
import Foundation
import Runtime
import Testing

/// The PNG reader behind `cnnc predict`.
@Suite struct PNGTests {
  @Test func decodesTheFixtureToTheIDXPixels() throws {
    let png = try [UInt8](Data(contentsOf: Fixtures.root.appendingPathComponent("Tests/Fixtures/seven.png")))
    let img = try PNG.decode(png, path: "seven.png")
    let test = try ImageDataset.load(directory: Fixtures.root.appendingPathComponent("data/mnist").path, split: "t10k")
    #expect(img.width == 28 && img.height == 28)
    #expect(img.pixels == Array(test.images.prefix(784)), "the first test image, a 7, written with the Sub filter")
  }

  @Test func damagedPNGsAreErrors() throws {
    let png = try [UInt8](Data(contentsOf: Fixtures.root.appendingPathComponent("Tests/Fixtures/seven.png")))
    for cut in [0, 7, 20, png.count / 2] {
      #expect(throws: DataError.self) { _ = try PNG.decode(Array(png.prefix(cut)), path: "x.png") }
    }
    var bad = png
    bad[1] = 0
    #expect(throws: DataError.self) { _ = try PNG.decode(bad, path: "x.png") }
  }
}
