import Foundation

/// Photo transforms with torchvision's semantics on 8-bit planar images, the steps of `--transform
/// resize:256,center_crop:224` (evaluation) and `--augment random_resized_crop:224,flip` (training):
/// `Resize`, `CenterCrop`, `RandomResizedCrop` (scale (0.08, 1), ratio (3/4, 4/3)) and `RandomHorizontalFlip`.
/// Resizing is bilinear with antialiasing, computed as the reference image library does for 8-bit images (its
/// coefficients, fixed-point sums and rounding, rows first): a resized photo is torchvision's within one level
/// (the same bytes, except where a newer version of that library resamples the columns first).
public enum ImageTransform: Equatable, Sendable, CustomStringConvertible {
  /// The shorter side to N pixels, the aspect ratio kept (the longer side truncated): `Resize(N)`.
  case resize(Int)
  /// Exactly H x W pixels: `Resize((H, W))`.
  case resizeTo(height: Int, width: Int)
  /// The centre H x W window, zero-padded where the image is smaller: `CenterCrop((H, W))`.
  case centerCrop(height: Int, width: Int)
  /// A random window of 8% to all of the area and aspect ratio 3/4 to 4/3, resized to H x W: `RandomResizedCrop`.
  case randomResizedCrop(height: Int, width: Int)
  /// Mirrored left to right with probability 1/2: `RandomHorizontalFlip()`.
  case flip

  /// The largest side a transform's size may name.
  public static let mostPixels = 8192
  /// The most pixels an image may have after a transform: `resize:8192` of a 100:1 panorama would be 20 GB of RGB.
  public static let mostImagePixels = JPEG.maxPixels
  /// `RandomResizedCrop`'s defaults: the window's share of the area, and its aspect ratio (width / height).
  public static let cropScale = (0.08, 1.0), cropRatio = (3.0 / 4.0, 4.0 / 3.0)
  /// Draws of a window before `RandomResizedCrop` falls back to the centre.
  public static let cropAttempts = 10

  /// The checkpoint metadata key of the evaluation transforms a model was trained with.
  public static let metadataKey = "cnnc.transform"

  /// The metadata recording `transforms` (none when there are none).
  public static func metadata(of transforms: [ImageTransform]) -> [String: String] {
    transforms.isEmpty ? [:] : [metadataKey: transforms.spec]
  }

  /// The transforms a checkpoint records; none when it records none.
  public static func recorded(in metadata: [String: String]) throws -> [ImageTransform] {
    guard let spec = metadata[metadataKey] else { return [] }
    do { return try parse(spec, option: "the checkpoint's \(metadataKey)") } catch { throw CheckpointError("\(error)") }
  }

  /// Whether the transform draws random numbers (an augmentation, for training only).
  public var isRandom: Bool {
    switch self {
    case .randomResizedCrop, .flip: true
    default: false
    }
  }

  public var description: String {
    switch self {
    case .resize(let n): "resize:\(n)"
    case .resizeTo(let h, let w): "resize:\(h)x\(w)"
    case .centerCrop(let h, let w): h == w ? "center_crop:\(h)" : "center_crop:\(h)x\(w)"
    case .randomResizedCrop(let h, let w): h == w ? "random_resized_crop:\(h)" : "random_resized_crop:\(h)x\(w)"
    case .flip: "flip"
    }
  }

  /// Parses a comma-separated list: `resize:N`, `resize:HxW`, `center_crop:N` or `center_crop:HxW`,
  /// `random_resized_crop:N` or `:HxW`, and `flip`; `option` names the flag in messages.
  public static func parse(_ spec: String, option: String) throws -> [ImageTransform] {
    try spec.split(separator: ",", omittingEmptySubsequences: false).map { item in
      let parts = item.trimmingCharacters(in: .whitespaces).split(separator: ":", maxSplits: 1).map(String.init)
      func size() throws -> (Int, Int) {
        let sides = parts.count == 2 ? parts[1].split(separator: "x", omittingEmptySubsequences: false).map { Int($0) } : []
        guard (1...2).contains(sides.count), let h = sides[0], let w = sides.last!, (1...mostPixels).contains(h), (1...mostPixels).contains(w) else {
          throw DataError("\(option) \(item): \(parts[0]) takes a size of 1 to \(mostPixels) pixels, as \(parts[0]):224 or \(parts[0]):224x192 (height x width)")
        }
        return (h, w)
      }
      switch parts.first ?? "" {
      case "resize":
        let (h, w) = try size()
        return parts[1].contains("x") ? .resizeTo(height: h, width: w) : .resize(h)
      case "center_crop":
        let (h, w) = try size()
        return .centerCrop(height: h, width: w)
      case "random_resized_crop":
        let (h, w) = try size()
        return .randomResizedCrop(height: h, width: w)
      case "flip" where parts.count == 1: return .flip
      default:
        throw DataError("\(option): '\(item)' is not a transform; the choices are resize:N, resize:HxW, center_crop:N, random_resized_crop:N and flip, comma-separated")
      }
    }
  }

  /// The image after this transform; a random one draws from `rng`. A resize that would pass `mostImagePixels` is
  /// refused (`path` names the image).
  public func apply(_ image: PlanarImage, _ rng: inout SeededRandom, path: String = "an image") throws -> PlanarImage {
    switch self {
    case .resize(let n):
      let (w, h) = (image.width, image.height)
      // The shorter side becomes n and the longer n * long / short, truncated (torchvision's rule).
      let long = Double(n) * Double(max(w, h)) / Double(min(w, h))
      guard long * Double(n) <= Double(Self.mostImagePixels) else {
        throw DataError("\(path): \(self) would make its \(w)x\(h) pixels \(Int(long)) long, more than \(Self.mostImagePixels >> 20) Mpx")
      }
      return Resample.bilinear(image, width: w <= h ? n : Int(long), height: w <= h ? Int(long) : n)
    case .resizeTo(let h, let w):
      return Resample.bilinear(image, width: w, height: h)
    case .centerCrop(let h, let w):
      return Self.centreCrop(image, height: h, width: w)
    case .randomResizedCrop(let h, let w):
      return Self.resizedCrop(image, window: Self.cropWindow(width: image.width, height: image.height, &rng), height: h, width: w)
    case .flip:
      return rng.next() & 1 == 0 ? image : Self.mirrored(image)
    }
  }

  /// The centre window, rounded as torchvision rounds it (half to even), the image first zero-padded to the
  /// window where it is smaller (the extra pixel of an odd difference on the right or bottom).
  static func centreCrop(_ image: PlanarImage, height h: Int, width w: Int) -> PlanarImage {
    let padLeft = max(0, (w - image.width) / 2), padTop = max(0, (h - image.height) / 2)
    let (pw, ph) = (max(w, image.width), max(h, image.height))
    let top = Int((Double(ph - h) / 2).rounded(.toNearestOrEven)), left = Int((Double(pw - w) / 2).rounded(.toNearestOrEven))
    return crop(image, top: top - padTop, left: left - padLeft, height: h, width: w)
  }

  /// The window of `image` resized to `height` x `width` (`RandomResizedCrop` once its window is drawn).
  public static func resizedCrop(_ image: PlanarImage, window: (top: Int, left: Int, height: Int, width: Int), height: Int, width: Int) -> PlanarImage {
    Resample.bilinear(crop(image, top: window.top, left: window.left, height: window.height, width: window.width), width: width, height: height)
  }

  /// The window of `image` from (top, left), zero where it leaves the image.
  public static func crop(_ image: PlanarImage, top: Int, left: Int, height h: Int, width w: Int) -> PlanarImage {
    var pixels = [UInt8](repeating: 0, count: image.channels * h * w)
    for c in 0..<image.channels {
      for y in max(0, -top)..<min(h, image.height - top) {
        let from = c * image.width * image.height + (y + top) * image.width
        for x in max(0, -left)..<min(w, image.width - left) { pixels[c * h * w + y * w + x] = image.pixels[from + x + left] }
      }
    }
    return PlanarImage(width: w, height: h, channels: image.channels, pixels: pixels)
  }

  static func mirrored(_ image: PlanarImage) -> PlanarImage {
    var out = image
    let w = image.width
    for row in 0..<(image.channels * image.height) {
      for x in 0..<w { out.pixels[row * w + x] = image.pixels[row * w + w - 1 - x] }
    }
    return out
  }

  /// `RandomResizedCrop.get_params`: up to `cropAttempts` draws of an area share and a log-uniform aspect ratio
  /// whose window fits, at a uniform position; else the centre window of the image clamped to the ratio range.
  public static func cropWindow(width: Int, height: Int, _ rng: inout SeededRandom) -> (top: Int, left: Int, height: Int, width: Int) {
    let area = Double(width * height), logRatio = (log(cropRatio.0), log(cropRatio.1))
    func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * Double(rng.next() >> 11) / Double(1 << 53) }
    for _ in 0..<cropAttempts {
      let target = area * uniform(cropScale.0, cropScale.1), ratio = exp(uniform(logRatio.0, logRatio.1))
      let w = Int((target * ratio).squareRoot().rounded(.toNearestOrEven)), h = Int((target / ratio).squareRoot().rounded(.toNearestOrEven))
      if w > 0, w <= width, h > 0, h <= height {
        let top = Int(rng.next() % UInt64(height - h + 1)), left = Int(rng.next() % UInt64(width - w + 1))
        return (top, left, h, w)
      }
    }
    let inRatio = Double(width) / Double(height)
    var (w, h) = (width, height)
    if inRatio < cropRatio.0 {
      h = Int((Double(w) / cropRatio.0).rounded(.toNearestOrEven))
    } else if inRatio > cropRatio.1 {
      w = Int((Double(h) * cropRatio.1).rounded(.toNearestOrEven))
    }
    return ((height - h) / 2, (width - w) / 2, h, w)
  }
}

extension Array where Element == ImageTransform {
  /// The image after every transform in order (`path` names it in errors).
  public func apply(_ image: PlanarImage, _ rng: inout SeededRandom, path: String = "an image") throws -> PlanarImage {
    var out = image
    for t in self { out = try t.apply(out, &rng, path: path) }
    return out
  }

  /// The height and width every image has after the transforms, when the last one fixes them.
  public var outputSize: (height: Int, width: Int)? {
    for t in reversed() {
      switch t {
      case .resizeTo(let h, let w), .centerCrop(let h, let w), .randomResizedCrop(let h, let w): return (h, w)
      case .resize: return nil
      case .flip: continue
      }
    }
    return nil
  }

  public var spec: String { map(\.description).joined(separator: ",") }
}

/// Antialiased bilinear resampling of 8-bit images as the reference image library computes it: per output pixel,
/// a triangle filter as wide as the scale factor (at least one pixel) over the source, its weights normalised and
/// rounded to fixed point with 22 fraction bits; the rows resampled first into 8-bit values, then the columns.
enum Resample {
  /// Fraction bits of the fixed-point weights (32 bits less 8 for the pixel and 2 of headroom).
  static let precisionBits = 22

  /// The image resampled to `width` x `height`.
  static func bilinear(_ image: PlanarImage, width: Int, height: Int) -> PlanarImage {
    let (w, h, channels) = (image.width, image.height, image.channels)
    if (w, h) == (width, height) { return image }
    let horizontal = coefficients(input: w, output: width), vertical = coefficients(input: h, output: height)
    // Only the source rows the vertical pass reads are resampled horizontally.
    let (first, last) = (vertical.bounds[0].start, vertical.bounds[height - 1].start + vertical.bounds[height - 1].count)
    var rows = image.pixels, rowsHeight = h
    if width != w {
      rowsHeight = last - first
      rows = [UInt8](repeating: 0, count: channels * rowsHeight * width)
      for c in 0..<channels {
        for y in 0..<rowsHeight {
          let source = c * w * h + (y + first) * w, target = c * rowsHeight * width + y * width
          for x in 0..<width { rows[target + x] = sum(horizontal, x) { image.pixels[source + $0] } }
        }
      }
    }
    guard height != h else { return PlanarImage(width: width, height: height, channels: channels, pixels: rows) }
    let shift = width != w ? first : 0
    var pixels = [UInt8](repeating: 0, count: channels * height * width)
    for c in 0..<channels {
      let plane = c * rowsHeight * width
      for y in 0..<height {
        for x in 0..<width { pixels[c * height * width + y * width + x] = sum(vertical, y, offset: -shift) { rows[plane + $0 * width + x] } }
      }
    }
    return PlanarImage(width: width, height: height, channels: channels, pixels: pixels)
  }

  /// Per output pixel, the first source pixel, how many it reads, and their fixed-point weights.
  struct Coefficients {
    var bounds: [(start: Int, count: Int)]
    var weights: [[Int32]]
  }

  /// The weights of resampling `input` pixels to `output`.
  static func coefficients(input: Int, output: Int) -> Coefficients {
    let scale = Double(input) / Double(output), filterScale = max(scale, 1), support = filterScale, inverse = 1 / filterScale
    var bounds: [(Int, Int)] = [], weights: [[Int32]] = []
    for i in 0..<output {
      let centre = (Double(i) + 0.5) * scale
      // Rounded by truncation of x + 0.5, as the reference does (its values here are never negative after the clamp).
      let start = max(0, Int(centre - support + 0.5)), end = min(input, Int(centre + support + 0.5))
      var k = (start..<end).map { x -> Double in
        let d = abs((Double(x) - centre + 0.5) * inverse)
        return d < 1 ? 1 - d : 0
      }
      let total = k.reduce(0, +)
      if total != 0 { k = k.map { $0 / total } }
      bounds.append((start, end - start))
      weights.append(k.map { Int32($0 < 0 ? -0.5 + $0 * Double(1 << precisionBits) : 0.5 + $0 * Double(1 << precisionBits)) })
    }
    return Coefficients(bounds: bounds, weights: weights)
  }

  /// One output pixel: the fixed-point sum of `pixel(source index)` over its window, rounded and clamped to 8 bits.
  @inline(__always)
  static func sum(_ c: Coefficients, _ i: Int, offset: Int = 0, _ pixel: (Int) -> UInt8) -> UInt8 {
    var total: Int32 = 1 << (precisionBits - 1)
    let (start, count) = c.bounds[i], k = c.weights[i]
    for j in 0..<count { total &+= Int32(pixel(start + j + offset)) &* k[j] }
    if total <= 0 { return 0 }
    if total >= (Int32(1) << precisionBits) << 8 { return 255 }
    return UInt8(total >> precisionBits)
  }
}
