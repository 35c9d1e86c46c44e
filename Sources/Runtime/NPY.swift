import FileSystem
import Foundation

/// NumPy's `.npy` format for float32 arrays (what `np.save` writes for a `float32` array in C order): the magic
/// `\x93NUMPY`, a version, a header dictionary (`descr`, `fortran_order`, `shape`) padded to 64 bytes, then the
/// little-endian values. Anything else is one error naming the file and the rule.
public struct NPYArray: Equatable, Sendable {
  public var shape: [Int]
  public var values: [Float]

  public init(shape: [Int], values: [Float]) {
    self.shape = shape
    self.values = values
  }

  static let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
  /// The largest header read (NumPy's own headers are 64 to a few hundred bytes).
  static let maxHeaderBytes = 1 << 16
  /// The largest array read: 4 GiB of float32, far above a batch of 224x224 images.
  public static let maxValues = 1 << 30

  /// Reads the `.npy` file at `path`.
  public static func read(_ path: String) throws -> NPYArray {
    try parse(try readRegularFile(path, maxBytes: 4 * maxValues + maxHeaderBytes), path: path)
  }

  /// Parses the bytes of a `.npy` file; `path` names it in errors.
  public static func parse(_ bytes: [UInt8], path: String) throws -> NPYArray {
    func bad(_ why: String) -> DataError { DataError("\(path): not a float32 .npy array: \(why)") }
    guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw bad("it does not start with the .npy magic") }
    let major = bytes[6]
    let lengthBytes: Int
    switch major {
    case 1: lengthBytes = 2
    case 2, 3: lengthBytes = 4
    default: throw bad("format version \(major) is not 1, 2 or 3")
    }
    guard bytes.count >= 8 + lengthBytes else { throw bad("the file ends inside its header") }
    let headerLength = (0..<lengthBytes).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
    let start = 8 + lengthBytes
    guard headerLength <= maxHeaderBytes, start + headerLength <= bytes.count else { throw bad("the header length \(headerLength) is past the file's end") }
    guard let header = String(validating: bytes[start..<(start + headerLength)], as: UTF8.self) else { throw bad("the header is not text") }
    let (descr, fortran, shape) = try dictionary(header, bad)
    guard descr == "<f4" || (descr == "|f4") else {
      throw bad("its dtype is '\(descr)'; cnnc takes little-endian float32 ('<f4'): convert with x.astype(np.float32)")
    }
    guard !fortran else { throw bad("it is in Fortran order; save a C-ordered array (np.ascontiguousarray)") }
    guard let count = shape.reduce(Int?(1), { n, d in n.flatMap { $0.multipliedReportingOverflow(by: d).overflow ? nil : $0 * d } }),
          count <= maxValues else { throw bad("the shape \(shape) has more than \(maxValues) values") }
    let data = start + headerLength
    guard bytes.count - data == 4 * count else {
      throw bad("the shape \(shape) needs \(4 * count) bytes of data, the file has \(bytes.count - data)")
    }
    let values = bytes.withUnsafeBytes { raw in
      (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: data + 4 * $0, as: UInt32.self))) }
    }
    return NPYArray(shape: shape, values: values)
  }

  /// The three keys of a header dictionary, `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
  static func dictionary(_ header: String, _ bad: (String) -> DataError) throws -> (descr: String, fortran: Bool, shape: [Int]) {
    func value(_ key: String) throws -> Substring {
      guard let k = header.range(of: "'\(key)'"), let colon = header[k.upperBound...].firstIndex(of: ":") else {
        throw bad("the header has no '\(key)'")
      }
      return header[header.index(after: colon)...].drop { $0 == " " }
    }
    let d = try value("descr")
    guard d.first == "'", let end = d.dropFirst().firstIndex(of: "'") else { throw bad("the header's 'descr' is not a string") }
    let descr = String(d[d.index(after: d.startIndex)..<end])
    let f = try value("fortran_order")
    guard f.hasPrefix("False") || f.hasPrefix("True") else { throw bad("the header's 'fortran_order' is not False or True") }
    let s = try value("shape")
    guard s.first == "(", let close = s.firstIndex(of: ")") else { throw bad("the header's 'shape' is not a tuple") }
    let items = s[s.index(after: s.startIndex)..<close].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    let shape = try items.map { item -> Int in
      guard let n = Int(item), n >= 0 else { throw bad("the shape has '\(item)', not a size") }
      return n
    }
    return (descr, f.hasPrefix("True"), shape)
  }

  /// The bytes of the array as a version 1.0 `.npy` file.
  public func serialized() -> [UInt8] {
    let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
    var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(dims)), }"
    // The magic, version and length take 10 bytes; the header ends in a newline and pads the whole to 64.
    let padding = (64 - (10 + header.utf8.count + 1) % 64) % 64
    header += String(repeating: " ", count: padding) + "\n"
    var out = Self.magic + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)] + Array(header.utf8)
    out.reserveCapacity(out.count + 4 * values.count)
    for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out += $0 } }
    return out
  }
}
