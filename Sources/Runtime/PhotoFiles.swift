import FileSystem
import Foundation

/// Photos a data set reads from disk per batch instead of holding their pixels (an image folder streamed): each
/// image's file, and the transforms that make every one `rows` x `cols` as it is read. A folder larger than memory
/// then trains: what is held is one path per image, and a batch's pixels while it is prepared.
public struct PhotoFiles: Sendable, Equatable {
  public var paths: [String]
  /// Applied to each decoded photo, random ones drawing from the image's generator (`Augmentation.generator`):
  /// `--transform`'s for evaluation, or training's `random_resized_crop` from `--augment`.
  public var transforms: [ImageTransform]
  public init(paths: [String], transforms: [ImageTransform]) {
    self.paths = paths
    self.transforms = transforms
  }
}

extension ImageDataset {
  /// A data set of photo files: `count` images of `channels` x `rows` x `cols` once read through `files.transforms`.
  public init(files: PhotoFiles, labels: [UInt8], rows: Int, cols: Int, channels: Int, path: String) {
    self.init(images: [], labels: labels, count: labels.count, rows: rows, cols: cols, channels: channels, path: path)
    self.files = files
  }

  /// Whether the images are read from disk per batch (`files`) rather than held.
  public var isStreamed: Bool { files != nil }

  /// The pixels of image `i` (planar, `imageBytes` of them): held ones as they are, a photo file decoded, transformed
  /// (random transforms drawing from `rng`) and given the set's channels; a photo of another size is an error
  /// naming it.
  public func pixels(_ i: Int, _ rng: inout SeededRandom) throws -> [UInt8] {
    guard let files else { return Array(images[(i * imageBytes)..<((i + 1) * imageBytes)]) }
    let path = files.paths[i]
    let picture = try files.transforms.apply(try ImageFile.read(path), &rng, path: path).converted(to: channels)
    guard picture.width == cols, picture.height == rows else {
      throw DataError("\(path) is \(picture.width)x\(picture.height)\(files.transforms.isEmpty ? "" : " after \(files.transforms.spec)"), "
        + "but the data set's images are \(cols)x\(rows); --transform resize:N,center_crop:N makes photos of any size one")
    }
    return picture.pixels
  }

  /// `normalizedBatch` of a streamed set: each photo read (deterministic transforms), then normalised.
  func streamedBatch(_ indices: ArraySlice<Int>, into out: inout [Float], _ n: Normalization) throws {
    let (scale, shift) = n.affine(channels: channels)
    let plane = rows * cols
    for (j, i) in indices.enumerated() {
      var rng = SeededRandom(seed: 0)
      let image = try pixels(i, &rng)
      for k in 0..<imageBytes { out[j * imageBytes + k] = Float(image[k]) * scale[k / plane] - shift[k / plane] }
    }
  }

  /// The examples at `indices` of a streamed set: their files and labels.
  func streamedSubset(_ indices: [Int], _ files: PhotoFiles) -> ImageDataset {
    var set = ImageDataset(files: PhotoFiles(paths: indices.map { files.paths[$0] }, transforms: files.transforms),
                           labels: indices.map { labels[$0] }, rows: rows, cols: cols, channels: channels, path: path)
    set.classNames = classNames
    return set
  }

  /// The streamed set's `fingerprint` (after its shape in `h`): its files' names below the folder, sizes and labels,
  /// and the transforms, without reading the photos.
  func streamedFingerprint(_ files: PhotoFiles, _ h: inout FingerprintHash) -> String {
    for (p, label) in zip(files.paths, labels) {
      for byte in p.dropFirst(path.count).utf8 { h.mix(UInt64(byte)) }
      h.mix(UInt64(max(0, fileStatus(p)?.st_size ?? 0)))
      h.mix(UInt64(label))
    }
    for byte in files.transforms.spec.utf8 { h.mix(UInt64(byte)) }
    return h.hex
  }
}

extension Normalization {
  /// Per channel, the scale and shift that take a byte to its normalised value: x * scale - shift.
  func affine(channels: Int) -> (scale: [Float], shift: [Float]) {
    let std = { (c: Int) in self.std.count == 1 ? self.std[0] : self.std[c] }, mean = { (c: Int) in self.mean.count == 1 ? self.mean[0] : self.mean[c] }
    return ((0..<channels).map { 1 / (255 * std($0)) }, (0..<channels).map { mean($0) / std($0) })
  }
}
