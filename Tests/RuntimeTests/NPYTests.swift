import Runtime
import Testing

/// The `.npy` reader and writer: what np.save writes for float32 C-ordered arrays, and one error for anything else.
struct NPYTests {
  @Test func roundTripsAndReadsNumPysOwnHeader() throws {
    for shape in [[2, 3, 4, 5], [7], [1, 10], [0, 3]] {
      let a = NPYArray(shape: shape, values: (0..<shape.reduce(1, *)).map { Float($0) * 0.25 - 1 })
      let bytes = a.serialized()
      #expect((bytes.count - 4 * a.values.count) % 64 == 0, "the header pads the data to 64 bytes")
      #expect(try NPYArray.parse(bytes, path: "a.npy") == a)
    }
    // The header np.save(…, np.zeros((2, 3), np.float32)) writes, byte for byte.
    var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
    header += String(repeating: " ", count: 128 - 10 - header.utf8.count - 1) + "\n"
    let numpy: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count), 0] + Array(header.utf8) + [UInt8](repeating: 0, count: 24)
    #expect(try NPYArray.parse(numpy, path: "z.npy") == NPYArray(shape: [2, 3], values: [Float](repeating: 0, count: 6)))
  }

  @Test func anythingElseIsOneErrorNamingTheRule() {
    let good = NPYArray(shape: [2, 2], values: [1, 2, 3, 4]).serialized()
    func error(_ bytes: [UInt8]) -> String {
      do {
        _ = try NPYArray.parse(bytes, path: "x.npy")
        return ""
      } catch {
        return "\(error)"
      }
    }
    /// `good` with the first occurrence of `a` replaced by `b` (of the same length), byte for byte.
    func replacing(_ a: String, _ b: String) -> [UInt8] {
      let (from, to) = (Array(a.utf8), Array(b.utf8))
      var out = good
      let i = out.indices.first { out[$0...].starts(with: from) }!
      out.replaceSubrange(i..<(i + from.count), with: to)
      return out
    }
    #expect(error(Array("not numpy at all".utf8)).contains("does not start with the .npy magic"))
    #expect(error(Array(good.prefix(good.count - 1))).contains("needs 16 bytes of data, the file has 15"))
    #expect(error(good + [0]).contains("needs 16 bytes of data, the file has 17"))
    #expect(error(Array(good.prefix(9))).contains("x.npy: not a float32 .npy array"))
    // Same-length edits of the header: another dtype, Fortran order, a negative size.
    #expect(error(replacing("<f4", "<f8")).contains("its dtype is '<f8'"))
    #expect(error(replacing("False", "True ")).contains("Fortran order"))
    #expect(error(replacing("(2, 2)", "(2,-2)")).contains("not a size"))
    var version = good
    version[6] = 9
    #expect(error(version).contains("format version 9"))
    let huge = NPYArray(shape: [1 << 40, 1 << 40], values: []).serialized()
    #expect(error(huge).contains("has more than"))
  }
}
