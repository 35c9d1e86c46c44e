import Foundation

/// Writes 8-bit PNGs for tests: grey (colour type 0), RGB (2) or RGBA (6), every row filter 0, the image
/// data in stored (uncompressed) deflate blocks, so the writer needs nothing beyond the PNG format itself.
public enum PNGWriter {
  /// `pixels` interleaved, `channels` per pixel (1, 3 or 4), row by row.
  public static func encode(width: Int, height: Int, channels: Int, pixels: [UInt8]) -> [UInt8] {
    precondition(pixels.count == width * height * channels && [1, 3, 4].contains(channels))
    var raw: [UInt8] = []
    for y in 0..<height { raw.append(0); raw += pixels[(y * width * channels)..<((y + 1) * width * channels)] }
    var header: [UInt8] = []
    header += be32(width) + be32(height) + [8, [1: 0, 3: 2, 4: 6][channels]!, 0, 0, 0]
    return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", header) + chunk("IDAT", zlibStored(raw)) + chunk("IEND", [])
  }

  static func be32(_ v: Int) -> [UInt8] { [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: v >> $0) } }

  static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
    let body = Array(type.utf8) + data
    return be32(data.count) + body + be32(Int(crc32(body)))
  }

  /// A zlib stream of stored blocks (at most 65,535 bytes each) with its Adler-32 check.
  static func zlibStored(_ data: [UInt8]) -> [UInt8] {
    var out: [UInt8] = [0x78, 0x01]
    var offset = 0
    repeat {
      let n = min(65_535, data.count - offset), last: UInt8 = offset + n == data.count ? 1 : 0
      out += [last, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
      out += data[offset..<(offset + n)]
      offset += n
    } while offset < data.count
    var (a, b): (UInt32, UInt32) = (1, 0)
    for byte in data { a = (a + UInt32(byte)) % 65_521; b = (b + a) % 65_521 }
    return out + be32(Int(b << 16 | a))
  }

  static func crc32(_ data: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in data {
      crc ^= UInt32(byte)
      for _ in 0..<8 { crc = crc & 1 == 1 ? 0xEDB8_8320 ^ (crc >> 1) : crc >> 1 }
    }
    return ~crc
  }
}
