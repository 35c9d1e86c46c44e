import Foundation

/// Seeded training-image augmentation (`--augment crop:4,flip` for CIFAR, `--augment shift:2,rotate:10` for
/// MNIST), applied to the raw pixels before normalisation: the transforms' maps composed into one, then one
/// pass that takes each pixel from the nearest source pixel, zero outside the image. Image j of step s draws from a generator keyed
/// by (seed, s, j) alone, so a rerun, a resumed run, any thread count and every MPI rank see the same images.
/// The cost is a few operations per pixel on the thread that prepares the batch, beside a training step of
/// millions of multiply-adds per image.
public struct Augmentation: Equatable, Sendable, CustomStringConvertible {
  public enum Transform: Equatable, Sendable {
    /// Zero-pad by N pixels on every side and cut a random window of the original size: a shift by a random
    /// whole number of pixels in [-N, N] along each axis, zeros coming in (torchvision's RandomCrop(padding: N)).
    case crop(Int)
    /// Mirror left to right with probability 1/2.
    case flip
    /// A random shift in [-N, N] pixels along each axis, zeros coming in (the same draw as `crop`).
    case shift(Int)
    /// A rotation about the centre by an angle uniform in [-D, D] degrees.
    case rotate(Double)
    /// torchvision's RandomResizedCrop: a window of a random area (scale (0.08, 1)) and aspect ratio ((3/4, 4/3)) of
    /// the photo as read, resized to height x width (antialiased bilinear). First when given: it makes the size the
    /// others see. Photo folders only (`ImageTransform.randomResizedCrop`).
    case randomResizedCrop(height: Int, width: Int)
  }

  public var transforms: [Transform]
  public static let none = Augmentation(transforms: [])

  public init(transforms: [Transform]) { self.transforms = transforms }

  /// The largest pad or shift and rotation accepted: beyond them nothing of the image would be left.
  public static let mostPixels = 64, mostDegrees = 180.0

  /// Parses `crop:PAD,flip,shift:PX,rotate:DEG` (any subset, in the order they apply).
  public init(parsing spec: String) throws {
    var out: [Transform] = []
    for item in spec.split(separator: ",", omittingEmptySubsequences: false).map({ $0.trimmingCharacters(in: .whitespaces) }) {
      let parts = item.split(separator: ":", maxSplits: 1).map(String.init)
      func pixels() throws -> Int {
        guard parts.count == 2, let n = Int(parts[1]), n >= 1, n <= Self.mostPixels else {
          throw DataError("--augment \(item): \(parts[0]) takes a whole number of pixels from 1 to \(Self.mostPixels), as \(parts[0]):4")
        }
        return n
      }
      switch parts.first ?? "" {
      case "crop": out.append(.crop(try pixels()))
      case "shift": out.append(.shift(try pixels()))
      case "flip" where parts.count == 1: out.append(.flip)
      case "random_resized_crop":
        guard out.isEmpty else { throw DataError("--augment \(item): random_resized_crop comes first (it sets the size the others see)") }
        guard case .randomResizedCrop(let h, let w) = try ImageTransform.parse(item, option: "--augment").first! else { preconditionFailure() }
        out.append(.randomResizedCrop(height: h, width: w))
      case "rotate":
        guard parts.count == 2, let d = Double(parts[1]), d > 0, d <= Self.mostDegrees else {
          throw DataError("--augment \(item): rotate takes degrees above 0 and at most \(Int(Self.mostDegrees)), as rotate:10")
        }
        out.append(.rotate(d))
      default:
        throw DataError("--augment: '\(item)' is not an augmentation; the choices are random_resized_crop:N (photo folders), crop:PAD, flip, shift:PX and rotate:DEG, comma-separated")
      }
    }
    transforms = out
  }

  public var description: String {
    transforms.map {
      switch $0 {
      case .crop(let n): "crop:\(n)"
      case .flip: "flip"
      case .shift(let n): "shift:\(n)"
      case .rotate(let d): "rotate:\(d == d.rounded() ? String(Int(d)) : String(d))"
      case .randomResizedCrop(let h, let w): ImageTransform.randomResizedCrop(height: h, width: w).description
      }
    }.joined(separator: ",")
  }

  /// The transforms of the photo as read (`random_resized_crop`), which a streamed training set applies as it
  /// reads each image: they replace the data set's `--transform` in training.
  public var photoTransforms: [ImageTransform] {
    transforms.compactMap { if case .randomResizedCrop(let h, let w) = $0 { .randomResizedCrop(height: h, width: w) } else { nil } }
  }

  /// The generator of image `index` of step `step`.
  public static func generator(seed: UInt64, step: Int, index: Int) -> SeededRandom {
    SeededRandom(seed: seed ^ (UInt64(truncatingIfNeeded: step) &* 0x9e37_79b9_7f4a_7c15), stream: 0x6175_6700 &+ UInt64(index))
  }

  /// An affine map from output pixel (y, x) to the source position (sy, sx) it reads:
  /// sy = yy * y + yx * x + y0, sx = xy * y + xx * x + x0.
  struct Affine {
    var yy = 1.0, yx = 0.0, y0 = 0.0, xy = 0.0, xx = 1.0, x0 = 0.0
    /// self after `inner`: the source of `inner`'s source.
    func after(_ inner: Affine) -> Affine {
      Affine(yy: yy * inner.yy + yx * inner.xy, yx: yy * inner.yx + yx * inner.xx, y0: yy * inner.y0 + yx * inner.x0 + y0,
             xy: xy * inner.yy + xx * inner.xy, xx: xy * inner.yx + xx * inner.xx, x0: xy * inner.y0 + xx * inner.x0 + x0)
    }
  }

  /// The source map of this image's draws: each transform's in order (drawn in that order), composed.
  func map(rows: Int, cols: Int, rng: inout SeededRandom) -> Affine {
    var m = Affine()
    for t in transforms {
      switch t {
      case .crop(let n), .shift(let n):
        let dy = Int(rng.next() % UInt64(2 * n + 1)) - n, dx = Int(rng.next() % UInt64(2 * n + 1)) - n
        m = m.after(Affine(y0: Double(dy), x0: Double(dx)))
      case .flip:
        if rng.next() & 1 == 1 { m = m.after(Affine(xx: -1, x0: Double(cols - 1))) }
      case .randomResizedCrop:
        continue  // drawn as the photo is read (`photoTransforms`)
      case .rotate(let d):
        let angle = Double(rng.uniform(Float(-d), Float(d))) * .pi / 180
        let (c, s) = (cos(angle), sin(angle))
        let (cy, cx) = (Double(rows - 1) / 2, Double(cols - 1) / 2)
        // The inverse rotation about the centre: the source of each output pixel.
        m = m.after(Affine(yy: c, yx: s, y0: cy - c * cy - s * cx, xy: -s, xx: c, x0: cx + s * cy - c * cx))
      }
    }
    return m
  }

  /// Applies the transforms to one image, planar [channels][rows][cols], in one pass: each output pixel is
  /// the source pixel nearest the composed map's position, zero where that falls outside the image.
  public func apply(_ image: inout [UInt8], channels: Int, rows: Int, cols: Int, rng: inout SeededRandom) {
    let m = map(rows: rows, cols: cols, rng: &rng)
    var out = [UInt8](repeating: 0, count: image.count)
    image.withUnsafeBufferPointer { src in
      out.withUnsafeMutableBufferPointer { dst in
        Self.remap(m, src, channels: channels, rows: rows, cols: cols) { i, v in dst[i] = v }
      }
    }
    image = out
  }

  /// Positions within this many pixels of the image round by truncation after this offset, which is
  /// exact (floor) and cheaper than a rounding call per pixel.
  static let roundingOffset = 4096.0

  /// `store(index, byte)` for every output byte of `src` under the source map `m` (zero outside the image).
  @inline(__always)
  static func remap(_ m: Affine, _ src: UnsafeBufferPointer<UInt8>, channels: Int, rows: Int, cols: Int, _ store: (Int, UInt8) -> Void) {
    let plane = rows * cols, bias = 0.5 + roundingOffset
    for y in 0..<rows {
      let (rowY, rowX) = (m.yy * Double(y) + m.y0 + bias, m.xy * Double(y) + m.x0 + bias)
      for x in 0..<cols {
        let sy = Int(m.yx * Double(x) + rowY) - Int(roundingOffset), sx = Int(m.xx * Double(x) + rowX) - Int(roundingOffset)
        let inside = sy >= 0 && sy < rows && sx >= 0 && sx < cols
        for ch in 0..<channels { store(ch * plane + y * cols + x, inside ? src[ch * plane + sy * cols + sx] : 0) }
      }
    }
  }
}

extension ImageDataset {
  /// `normalizedBatch` of augmented images: image j of the batch transformed by the draws of (seed, step, j),
  /// remapped and normalised in one pass.
  /// A streamed set's photos are read here, their random transforms (`random_resized_crop`) drawing first.
  public func augmentedBatch(_ indices: ArraySlice<Int>, into out: inout [Float], _ n: Normalization, _ a: Augmentation,
                             seed: UInt64, step: Int) throws {
    if isStreamed {
      let (scale, shift) = n.affine(channels: channels), plane = rows * cols
      for (j, i) in indices.enumerated() {
        var rng = Augmentation.generator(seed: seed, step: step, index: j)
        let image = try pixels(i, &rng)
        let m = a.map(rows: rows, cols: cols, rng: &rng)
        image.withUnsafeBufferPointer { src in
          Augmentation.remap(m, src, channels: channels, rows: rows, cols: cols) { k, v in
            out[j * imageBytes + k] = Float(v) * scale[k / plane] - shift[k / plane]
          }
        }
      }
      return
    }
    let px = imageBytes, plane = rows * cols
    let (scale, shift) = n.affine(channels: channels)
    images.withUnsafeBufferPointer { all in
      out.withUnsafeMutableBufferPointer { dst in
        for (j, i) in indices.enumerated() {
          var rng = Augmentation.generator(seed: seed, step: step, index: j)
          let m = a.map(rows: rows, cols: cols, rng: &rng)
          let src = UnsafeBufferPointer(rebasing: all[(i * px)..<((i + 1) * px)])
          Augmentation.remap(m, src, channels: channels, rows: rows, cols: cols) { k, v in
            let c = k / plane
            dst[j * px + k] = Float(v) * scale[c] - shift[c]
          }
        }
      }
    }
  }
}
