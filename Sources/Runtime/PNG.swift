import CZlib
import Foundation

/// A decoded greyscale image.
public struct GrayImage: Sendable {
  public var width: Int
  public var height: Int
  /// Row-major 8-bit luminance.
  public var pixels: [UInt8]
}

/// A decoded image with its channels planar (CHW): 1 (grey) or 3 (red, green, blue planes).
public struct PlanarImage: Sendable {
  public var width: Int
  public var height: Int
  public var channels: Int
  public var pixels: [UInt8]

  /// `pixels` planar: `channels` planes of height x width bytes.
  public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
    (self.width, self.height, self.channels, self.pixels) = (width, height, channels, pixels)
  }

  /// The image with `count` channels: grey replicated into three planes, or RGB reduced to its luma.
  public func converted(to count: Int) -> PlanarImage {
    guard count != channels else { return self }
    let plane = width * height
    if count == 3 { return PlanarImage(width: width, height: height, channels: 3, pixels: pixels + pixels + pixels) }
    let luma = (0..<plane).map { i in PNG.luma(pixels[i], pixels[plane + i], pixels[2 * plane + i]) }
    return PlanarImage(width: width, height: height, channels: 1, pixels: luma)
  }
}

/// Decodes non-interlaced 8-bit PNGs (greyscale, grey+alpha, RGB, RGBA) to greyscale or planar colour.
public enum PNG {
  /// The image header's fields this decoder reads.
  struct Header {
    var width = 0, height = 0, colorType = -1
    /// Bytes per pixel of the colour type.
    var channels: Int { [0: 1, 2: 3, 4: 2, 6: 4][colorType]! }
  }

  public static func decode(_ bytes: [UInt8], path: String) throws -> GrayImage {
    let img = try decodePlanar(bytes, path: path).converted(to: 1)
    return GrayImage(width: img.width, height: img.height, pixels: img.pixels)
  }

  /// The image in its own channels: one plane for grey (and grey+alpha), three for RGB (and RGBA); alpha
  /// is dropped.
  public static func decodePlanar(_ bytes: [UInt8], path: String) throws -> PlanarImage {
    func fail(_ m: String) -> DataError { DataError("\(path): \(m)") }
    let (header, idat) = try chunks(bytes, fail)
    let stride = header.width * header.channels
    var raw = [UInt8](repeating: 0, count: (stride + 1) * header.height)
    var rawLength = uLongf(raw.count)
    let status = raw.withUnsafeMutableBufferPointer { out in
      idat.withUnsafeBufferPointer { inp in uncompress(out.baseAddress, &rawLength, inp.baseAddress, uLong(inp.count)) }
    }
    guard status == Z_OK, Int(rawLength) == raw.count else { throw fail("corrupt or truncated image data") }
    let img = try unfiltered(raw, header, fail)
    return planar(img, header)
  }

  /// The header and the concatenated image data of the file's chunks, each checked against its CRC.
  static func chunks(_ bytes: [UInt8], _ fail: (String) -> DataError) throws -> (Header, [UInt8]) {
    guard bytes.count > 8, bytes[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else {
      throw fail("not a PNG file (bad signature)")
    }
    func be32(_ o: Int) -> Int { bytes[o..<o + 4].reduce(0) { $0 << 8 | Int($1) } }
    var pos = 8
    var header: Header?
    var idat: [UInt8] = []
    while pos + 8 <= bytes.count {
      let length = be32(pos)
      let type = String(decoding: bytes[(pos + 4)..<(pos + 8)], as: UTF8.self)
      guard length >= 0, pos + 12 + length <= bytes.count else { throw fail("truncated \(type) chunk") }
      let data = bytes[(pos + 8)..<(pos + 8 + length)]
      // Every chunk ends with the CRC-32 of its type and data: a damaged file is refused, not half-read.
      let stored = UInt(be32(pos + 8 + length))
      let computed = bytes.withUnsafeBufferPointer { UInt(crc32(0, $0.baseAddress! + pos + 4, uInt(length + 4))) }
      guard stored == computed else {
        throw fail(String(format: "%@ chunk at byte %d fails its CRC check (stored %08x, computed %08x): the file is damaged", type, pos, stored, computed))
      }
      switch type {
      case "IHDR": header = try parseHeader(Array(data), fail)
      case "IDAT": idat += data
      case "IEND": pos = bytes.count
      default: break
      }
      pos += 12 + length
    }
    guard let header else { throw fail("no IHDR chunk") }
    return (header, idat)
  }

  static func parseHeader(_ d: [UInt8], _ fail: (String) -> DataError) throws -> Header {
    guard d.count == 13 else { throw fail("bad IHDR chunk") }
    let h = Header(width: d[0..<4].reduce(0) { $0 << 8 | Int($1) }, height: d[4..<8].reduce(0) { $0 << 8 | Int($1) }, colorType: Int(d[9]))
    guard d[8] == 8 else { throw fail("only 8-bit PNGs are supported (bit depth \(d[8]))") }
    guard d[12] == 0 else { throw fail("interlaced PNGs are not supported") }
    guard [0, 2, 4, 6].contains(h.colorType) else { throw fail("unsupported PNG colour type \(h.colorType) (palette images are not supported)") }
    guard h.width > 0, h.height > 0, h.width <= 16384, h.height <= 16384 else { throw fail("absurd size \(h.width)x\(h.height)") }
    return h
  }

  /// The pixels with the per-row filters undone (PNG spec, section 9).
  static func unfiltered(_ raw: [UInt8], _ h: Header, _ fail: (String) -> DataError) throws -> [UInt8] {
    let channels = h.channels, stride = h.width * channels
    var img = [UInt8](repeating: 0, count: stride * h.height)
    for y in 0..<h.height {
      let filter = raw[y * (stride + 1)]
      for x in 0..<stride {
        let v = Int(raw[y * (stride + 1) + 1 + x])
        let a = x >= channels ? Int(img[y * stride + x - channels]) : 0
        let b = y > 0 ? Int(img[(y - 1) * stride + x]) : 0
        let c = x >= channels && y > 0 ? Int(img[(y - 1) * stride + x - channels]) : 0
        let predicted: Int
        switch filter {
        case 0: predicted = 0
        case 1: predicted = a
        case 2: predicted = b
        case 3: predicted = (a + b) / 2
        case 4:
          let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
          predicted = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
        default: throw fail("bad PNG row filter \(filter)")
        }
        img[y * stride + x] = UInt8(truncatingIfNeeded: v + predicted)
      }
    }
    return img
  }

  /// ITU-R BT.601 luma of an RGB pixel.
  static func luma(_ r: UInt8, _ g: UInt8, _ b: UInt8) -> UInt8 {
    let (red, green, blue): (Int, Int, Int) = (299 * Int(r), 587 * Int(g), 114 * Int(b))
    return UInt8((red + green + blue) / 1000)
  }

  /// The interleaved pixels as planes: grey's first byte of each pixel, or RGB's first three (alpha dropped).
  static func planar(_ img: [UInt8], _ h: Header) -> PlanarImage {
    let stride = h.channels, plane = h.width * h.height
    let colour = h.colorType == 2 || h.colorType == 6
    let channels = colour ? 3 : 1
    var pixels = [UInt8](repeating: 0, count: channels * plane)
    for c in 0..<channels { for i in 0..<plane { pixels[c * plane + i] = img[i * stride + c] } }
    return PlanarImage(width: h.width, height: h.height, channels: channels, pixels: pixels)
  }
}
