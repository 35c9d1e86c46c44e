import CNNCTestSupport
import Foundation
import Runtime
import Testing

/// `--augment`: parsed with clear errors, each transform doing what it says, seeded per (seed, step, image).
@Suite struct AugmentationTests {
  /// A 3-channel 8x6 image whose every pixel differs: channel c, row y, column x holds 1 + c * 48 + y * 6 + x.
  static let (channels, rows, cols) = (3, 8, 6)
  static let image: [UInt8] = (0..<(channels * rows * cols)).map { UInt8(1 + $0) }

  static func pixel(_ img: [UInt8], _ c: Int, _ y: Int, _ x: Int) -> UInt8 { img[c * rows * cols + y * cols + x] }

  static func augmented(_ spec: String, seed: UInt64 = 3, step: Int = 1, index: Int = 0) throws -> [UInt8] {
    var img = image
    var rng = Augmentation.generator(seed: seed, step: step, index: index)
    try Augmentation(parsing: spec).apply(&img, channels: channels, rows: rows, cols: cols, rng: &rng)
    return img
  }

  @Test func specsParseAndBadOnesNameTheRule() throws {
    #expect(try Augmentation(parsing: "crop:4,flip").transforms == [.crop(4), .flip])
    #expect(try Augmentation(parsing: "shift:2, rotate:10").description == "shift:2,rotate:10")
    for (bad, says) in [("zoom:2", "is not an augmentation"), ("crop", "whole number of pixels"), ("crop:0", "from 1 to 64"),
                        ("shift:x", "whole number"), ("rotate:400", "at most 180"), ("flip:2", "is not an augmentation"), ("", "is not an augmentation")] {
      #expect(throws: DataError.self) { try Augmentation(parsing: bad) }
      do { _ = try Augmentation(parsing: bad) } catch { #expect("\(error)".contains(says), "\(bad): \(error)") }
    }
  }

  /// crop and shift: the image moved by whole pixels in [-N, N], zeros coming in, every channel alike.
  @Test func cropAndShiftMoveTheImageByWholePixels() throws {
    var offsets = Set<[Int]>()
    for step in 1...60 {
      let out = try Self.augmented(step % 2 == 0 ? "crop:2" : "shift:2", step: step)
      let found = (-2...2).flatMap { dy in (-2...2).map { dx in [dy, dx] } }.filter { o in
        (0..<Self.channels).allSatisfy { c in (0..<Self.rows).allSatisfy { y in (0..<Self.cols).allSatisfy { x in
          let (sy, sx) = (y + o[0], x + o[1])
          let want: UInt8 = sy >= 0 && sy < Self.rows && sx >= 0 && sx < Self.cols ? Self.pixel(Self.image, c, sy, sx) : 0
          return Self.pixel(out, c, y, x) == want
        } } }
      }
      #expect(found.count == 1, "step \(step): not a shift of the image")
      if let o = found.first { offsets.insert(o) }
    }
    #expect(offsets.count > 10, "the draws cover the offsets: \(offsets.count) of 25")
  }

  @Test func flipMirrorsHalfTheTime() throws {
    var flipped = 0
    for step in 1...40 {
      let out = try Self.augmented("flip", step: step)
      let mirror = (0..<Self.image.count).map { i in Self.image[i - i % Self.cols + (Self.cols - 1 - i % Self.cols)] }
      #expect(out == Self.image || out == mirror)
      if out == mirror { flipped += 1 }
    }
    #expect(flipped > 8 && flipped < 32, "\(flipped) of 40 flipped")
  }

  @Test func rotationKeepsTheCentreAndTurnsTheRest() throws {
    // A cross through the centre of a 9x9 image: a small rotation keeps the centre; 90 degrees at most moves the rest.
    var img = [UInt8](repeating: 0, count: 81)
    for i in 0..<9 { img[4 * 9 + i] = 200; img[i * 9 + 4] = 200 }
    var changed = 0
    for step in 1...20 {
      var out = img
      var rng = Augmentation.generator(seed: 1, step: step, index: 0)
      try Augmentation(parsing: "rotate:90").apply(&out, channels: 1, rows: 9, cols: 9, rng: &rng)
      #expect(out[4 * 9 + 4] == 200)
      if out != img { changed += 1 }
    }
    #expect(changed > 10)
  }

  @Test func drawsDependOnSeedStepAndImageOnly() throws {
    #expect(try Self.augmented("crop:3,flip,rotate:15") == (try Self.augmented("crop:3,flip,rotate:15")))
    let others = [try Self.augmented("crop:3,flip,rotate:15", seed: 4), try Self.augmented("crop:3,flip,rotate:15", step: 2),
                  try Self.augmented("crop:3,flip,rotate:15", index: 1)]
    #expect(others.allSatisfy { $0 != (try? Self.augmented("crop:3,flip,rotate:15")) })
    // A batch: image j of step s is the same whichever batch position indices it comes from.
    let set = ImageDataset(images: Self.image + Self.image, labels: [0, 1], count: 2, rows: Self.rows, cols: Self.cols, channels: Self.channels)
    var a = [Float](repeating: 0, count: 2 * Self.image.count), b = a
    let aug = try Augmentation(parsing: "shift:2,flip")
    try set.augmentedBatch([0, 1][...], into: &a, .mnist, aug, seed: 9, step: 5)
    try set.augmentedBatch([1, 0][...], into: &b, .mnist, aug, seed: 9, step: 5)
    #expect(a == b)
  }
}
