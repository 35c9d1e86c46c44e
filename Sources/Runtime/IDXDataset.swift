import GraphIR
import CZlib
import Foundation

/// A data error a user can act on: a missing, truncated or malformed file.
public struct DataError: UserFacingError {
  public var description: String
  public init(_ d: String) { description = d }
}

/// Images and labels of one IDX split (MNIST layout), kept as bytes; normalised per batch.
/// How pixels become network inputs: (x / 255 - mean) / std.
public struct Normalization: Equatable, Sendable, CustomStringConvertible {
  public var mean: Float
  public var std: Float
  public init(mean: Float, std: Float) {
    self.mean = mean
    self.std = std
  }
  /// MNIST's training-set statistics, the PyTorch tutorials' constants and the default.
  public static let mnist = Normalization(mean: 0.1307, std: 0.3081)

  /// The checkpoint metadata keys it is saved under.
  static let meanKey = "cnnc.normalize.mean", stdKey = "cnnc.normalize.std"
  public var metadata: [String: String] { [Self.meanKey: "\(mean)", Self.stdKey: "\(std)"] }

  /// The normalisation a checkpoint was trained with; nil for files that do not say (MNIST's then).
  public init?(metadata: [String: String]) throws {
    guard let m = metadata[Self.meanKey], let s = metadata[Self.stdKey] else { return nil }
    guard let mean = Float(m), mean.isFinite, let std = Float(s), std.isFinite, std > 0 else {
      throw CheckpointError("the checkpoint's normalisation (mean '\(m)', std '\(s)') is not a finite mean and a positive std")
    }
    self.init(mean: mean, std: std)
  }

  public var description: String { "(x/255 - \(mean)) / \(std)" }
}

public struct IDXDataset: Sendable {
  public var images: [UInt8]
  public var labels: [UInt8]
  public var count: Int
  public var rows: Int
  public var cols: Int
  /// The images file, for messages.
  public var path: String

  public init(images: [UInt8], labels: [UInt8], count: Int, rows: Int, cols: Int, path: String = "the images") {
    self.images = images
    self.labels = labels
    self.count = count
    self.rows = rows
    self.cols = cols
    self.path = path
  }

  /// Checks that the images are what the graph's image input takes: one channel of rows x cols, the
  /// input's dimensions after N. A mismatch would make every batch read past (or short of) its images.
  public func validateImages(forInput dims: [Int]) throws {
    guard dims.count == 4, dims[1] == 1 else {
      throw DataError("the graph's image input is [N, \(dims.dropFirst().map(String.init).joined(separator: ", "))]; IDX data gives [N, 1, \(rows), \(cols)] images")
    }
    guard dims[2] == rows, dims[3] == cols else {
      throw DataError("\(path) holds \(rows)x\(cols) images; the graph takes [N, 1, \(dims[2]), \(dims[3])]")
    }
  }

  /// Loads `PREFIX-images-idx3-ubyte[.gz]` and `PREFIX-labels-idx1-ubyte[.gz]` from `dir`.
  public static func load(directory dir: String, split prefix: String) throws -> IDXDataset {
    let imagesPath = try find(dir, "\(prefix)-images-idx3-ubyte")
    let labelsPath = try find(dir, "\(prefix)-labels-idx1-ubyte")
    let img = try parse(try readMaybeGzipped(imagesPath), path: imagesPath, magic: 0x0000_0803)
    let lab = try parse(try readMaybeGzipped(labelsPath), path: labelsPath, magic: 0x0000_0801)
    guard img.dims[0] == lab.dims[0] else {
      throw DataError("\(imagesPath) holds \(img.dims[0]) images but \(labelsPath) holds \(lab.dims[0]) labels")
    }
    return IDXDataset(images: img.data, labels: lab.data, count: img.dims[0], rows: img.dims[1], cols: img.dims[2], path: imagesPath)
  }

  /// Checks every label is below `classes`.
  public func validateLabels(classes: Int) throws {
    if let i = labels.firstIndex(where: { Int($0) >= classes }) {
      throw DataError("label \(labels[i]) of example \(i) is out of range: the graph has \(classes) classes")
    }
  }

  static func find(_ dir: String, _ base: String) throws -> String {
    for name in [base + ".gz", base] {
      let p = (dir as NSString).appendingPathComponent(name)
      if FileManager.default.fileExists(atPath: p) { return p }
    }
    throw DataError("missing data file: \((dir as NSString).appendingPathComponent(base))[.gz] not found")
  }

  /// Reads a file through zlib, which also passes uncompressed files through unchanged.
  public static func readMaybeGzipped(_ path: String, limit: Int = 1 << 30) throws -> [UInt8] {
    try requireRegularFile(path)
    guard let f = gzopen(path, "rb") else { throw DataError("cannot open \(path)") }
    defer { gzclose(f) }
    var out: [UInt8] = []
    // A gzip file ends with its uncompressed size (mod 2^32): reserving it avoids growing a 47 MB array by copies.
    if let h = FileHandle(forReadingAtPath: path), let end = try? h.seekToEnd(), end >= 4 {
      try? h.seek(toOffset: end - 4)
      if let t = try? h.read(upToCount: 4), t.count == 4 {
        out.reserveCapacity(min(limit, t.reversed().reduce(0) { $0 << 8 | Int($1) }))
      }
      try? h.close()
    }
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
      let n = chunk.withUnsafeMutableBytes { gzread(f, $0.baseAddress, UInt32($0.count)) }
      if n < 0 {
        var errnum: Int32 = 0
        let msg = gzerror(f, &errnum).map { String(cString: $0) } ?? "read error"
        throw DataError("\(path): corrupt or truncated gzip data (\(msg))")
      }
      if n == 0 { break }
      out += chunk[0..<Int(n)]
      guard out.count <= limit else { throw DataError("\(path): more than \(limit) bytes of data; not an IDX file of this kind") }
    }
    var errnum: Int32 = 0
    _ = gzerror(f, &errnum)
    if errnum == Z_BUF_ERROR { throw DataError("\(path): truncated gzip data (the file ends early)") }
    return out
  }

  /// Parses an IDX header (magic, big-endian dims) and checks the payload size exactly.
  public static func parse(_ input: consuming [UInt8], path: String, magic: UInt32) throws -> (dims: [Int], data: [UInt8]) {
    var bytes = input
    func be32(_ o: Int) -> UInt32 { bytes[o..<o + 4].reduce(0) { $0 << 8 | UInt32($1) } }
    guard bytes.count >= 4 else { throw DataError("\(path): file is \(bytes.count) bytes, too short for an IDX header") }
    let m = be32(0)
    guard m == magic else {
      throw DataError(String(format: "%@: wrong magic number 0x%08X, expected 0x%08X (%@)", path, m, magic,
                             magic == 0x803 ? "ubyte images, 3 dimensions" : "ubyte labels, 1 dimension"))
    }
    let rank = Int(magic & 0xFF)
    guard bytes.count >= 4 + 4 * rank else { throw DataError("\(path): truncated IDX header") }
    let dims = (0..<rank).map { Int(be32(4 + 4 * $0)) }
    guard let size = checkedSize(dims) else { throw DataError("\(path): absurd dimensions \(dims)") }
    let payload = bytes.count - 4 - 4 * rank
    guard payload == size else {
      throw DataError("\(path): header promises \(dims.map(String.init).joined(separator: "x")) = \(size) bytes but the file holds \(payload)"
        + (payload < size ? " (truncated)" : " (trailing data)"))
    }
    if rank == 3, dims[1] == 0 || dims[2] == 0 { throw DataError("\(path): empty images \(dims)") }
    // Drop the header in place: the payload is most of the file, and a copy would double the peak memory.
    bytes.removeSubrange(0..<(4 + 4 * rank))
    return (dims, bytes)
  }

  static func checkedSize(_ dims: [Int]) -> Int? {
    var p = 1
    for d in dims {
      let (r, o) = p.multipliedReportingOverflow(by: d)
      if o || r > 1 << 34 { return nil }
      p = r
    }
    return p
  }

  /// Writes the normalised images (x/255 - mean)/std of `indices` into `out` (NCHW, C = 1).
  public func normalizedBatch(_ indices: ArraySlice<Int>, into out: inout [Float], _ n: Normalization = .mnist) {
    let px = rows * cols
    var o = 0
    for i in indices {
      let base = i * px
      for j in 0..<px {
        out[o] = (Float(images[base + j]) / 255 - n.mean) / n.std
        o += 1
      }
    }
  }

  /// The mean and (population) standard deviation of every pixel of the set, as x/255.
  public func measuredNormalization() -> Normalization {
    var histogram = [Int](repeating: 0, count: 256)
    for p in images { histogram[Int(p)] += 1 }
    let n = Double(max(1, images.count))
    let mean = histogram.indices.reduce(0.0) { $0 + Double(histogram[$1]) * Double($1) / 255 } / n
    let variance = histogram.indices.reduce(0.0) { s, v in
      let d = Double(v) / 255 - mean
      return s + Double(histogram[v]) * d * d
    } / n
    return Normalization(mean: Float(mean), std: Float(max(variance.squareRoot(), 1e-6)))
  }

  /// The examples at `indices`, in that order.
  public func subset(_ indices: [Int]) -> IDXDataset {
    let px = rows * cols
    var images: [UInt8] = []
    images.reserveCapacity(indices.count * px)
    for i in indices { images += self.images[(i * px)..<((i + 1) * px)] }
    return IDXDataset(images: images, labels: indices.map { labels[$0] }, count: indices.count, rows: rows, cols: cols, path: path)
  }

  /// The training and validation sets: `held` examples chosen by the seed (kept in their original order),
  /// or the last `held`.
  public func validationSplit(held: Int, _ how: TrainingOptions.ValidationSplit, seed: UInt64) -> (IDXDataset, IDXDataset) {
    guard how == .random else { return split(first: count - held) }
    var rng = SeededRandom(seed: seed, stream: Self.validationStream)
    var isHeld = [Bool](repeating: false, count: count)
    for i in rng.permutation(count).prefix(held) { isHeld[i] = true }
    return (subset((0..<count).filter { !isHeld[$0] }), subset((0..<count).filter { isHeld[$0] }))
  }

  /// The random stream of the validation split (distinct from initialisation's, the epochs' and dropout's).
  static let validationStream: UInt64 = 0x7661_6c00

  /// The first `n` examples and the rest (a fixed, unshuffled validation split).
  public func split(first n: Int) -> (IDXDataset, IDXDataset) {
    let px = rows * cols
    let a = IDXDataset(images: Array(images[0..<(n * px)]), labels: Array(labels[0..<n]), count: n, rows: rows, cols: cols, path: path)
    let b = IDXDataset(images: Array(images[(n * px)...]), labels: Array(labels[n...]), count: count - n, rows: rows, cols: cols, path: path)
    return (a, b)
  }
}
