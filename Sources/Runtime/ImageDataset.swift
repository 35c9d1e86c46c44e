import FileSystem
import GraphIR
import CZlib
import Foundation

/// A data error a user can act on: a missing, truncated or malformed file.
public struct DataError: UserFacingError {
  public var description: String
  public init(_ d: String) { description = d }
}

/// How pixels become network inputs: (x / 255 - mean[c]) / std[c] for channel c, with one mean and std
/// for every channel or one per channel.
public struct Normalization: Equatable, Sendable, CustomStringConvertible {
  public var mean: [Float]
  public var std: [Float]
  public init(mean: Float, std: Float) { (self.mean, self.std) = ([mean], [std]) }
  /// One mean and std per channel (or one for all); equal counts.
  public init(means: [Float], stds: [Float]) {
    precondition(!means.isEmpty && means.count == stds.count, "one std per mean")
    (mean, std) = (means, stds)
  }
  /// MNIST's training-set statistics, the PyTorch tutorials' constants and the default.
  public static let mnist = Normalization(mean: 0.1307, std: 0.3081)
  /// ImageNet's per-channel statistics, what torchvision's pretrained models expect (`--normalize imagenet`).
  public static let imagenet = Normalization(means: [0.485, 0.456, 0.406], stds: [0.229, 0.224, 0.225])
  /// The named presets `--normalize` takes.
  public static let presets: [String: Normalization] = ["mnist": .mnist, "imagenet": .imagenet]

  /// The checkpoint metadata keys it is saved under (comma-separated values, one per channel or one).
  static let meanKey = "cnnc.normalize.mean", stdKey = "cnnc.normalize.std"
  public var metadata: [String: String] {
    [Self.meanKey: mean.map { "\($0)" }.joined(separator: ","), Self.stdKey: std.map { "\($0)" }.joined(separator: ",")]
  }

  /// The normalisation a checkpoint was trained with; nil for files that do not say (MNIST's then).
  public init?(metadata: [String: String]) throws {
    guard let m = metadata[Self.meanKey], let s = metadata[Self.stdKey] else { return nil }
    guard let (means, stds) = Self.parse(m, s) else {
      throw CheckpointError("the checkpoint's normalisation (mean '\(m)', std '\(s)') is not finite means and positive stds, as many of each")
    }
    self.init(means: means, stds: stds)
  }

  /// Means and stds from comma-separated text (`--mean 0.49,0.48,0.45`), or nil unless every mean is
  /// finite, every std positive and finite, and there are as many of each.
  public static func parse(_ mean: String, _ std: String) -> ([Float], [Float])? {
    let means = mean.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
    let stds = std.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
    guard !means.isEmpty, means.count == stds.count, means.allSatisfy({ $0?.isFinite == true }),
          stds.allSatisfy({ ($0?.isFinite ?? false) && $0! > 0 }) else { return nil }
    return (means.map { $0! }, stds.map { $0! })
  }

  /// Checks there is one mean for all channels or one per channel.
  public func check(channels: Int) throws {
    guard mean.count == 1 || mean.count == channels else {
      throw DataError("the normalisation has \(mean.count) means and stds; the images have \(channels) channels (give one, or one per channel)")
    }
  }

  public var description: String {
    func list(_ v: [Float]) -> String { v.count == 1 ? "\(v[0])" : "[" + v.map { "\($0)" }.joined(separator: ", ") + "]" }
    return "(x/255 - \(list(mean))) / \(list(std))\(mean.count > 1 ? " per channel" : "")"
  }
}

/// The 64-bit hash `ImageDataset.fingerprint` mixes words into (FNV-1a's constants, with a shift so that high bits
/// reach the low ones).
struct FingerprintHash {
  private var h: UInt64 = 0xcbf2_9ce4_8422_2325
  mutating func mix(_ word: UInt64) { h = (h ^ word) &* 0x0000_0100_0000_01b3; h ^= h >> 29 }
  var hex: String { String(h, radix: 16) }
}

/// Images and labels of one split (IDX files, the CIFAR-10/100 binary format, image folders), kept as bytes with
/// each image's channels planar (CHW), or as photo files read per batch (`files`); normalised per batch.
public struct ImageDataset: Sendable {
  public var images: [UInt8]
  public var labels: [UInt8]
  public var count: Int
  public var rows: Int
  public var cols: Int
  /// Channels per image (1 for IDX, 3 for CIFAR).
  public var channels: Int
  /// The images file, for messages.
  public var path: String
  /// The class names, label order, where the data names them (image folders: the class folders).
  public var classNames: [String]?
  /// The photo files a streamed set reads per batch (then `images` is empty).
  public var files: PhotoFiles?
  /// The checkpoint metadata key of the class names (one per line, label order).
  public static let classNamesKey = "cnnc.classes"
  /// Bytes of one image.
  public var imageBytes: Int { channels * rows * cols }

  public init(images: [UInt8], labels: [UInt8], count: Int, rows: Int, cols: Int, channels: Int = 1, path: String = "the images") {
    self.images = images
    self.labels = labels
    self.count = count
    self.rows = rows
    self.cols = cols
    self.channels = channels
    self.path = path
  }

  /// Every image after `transforms` (deterministic ones); they must leave every image one size.
  public func transformed(by transforms: [ImageTransform]) throws -> ImageDataset {
    var rng = SeededRandom(seed: 0)
    var out: [UInt8] = [], size: (Int, Int)?
    for i in 0..<count {
      let image = try transforms.apply(PlanarImage(width: cols, height: rows, channels: channels,
                                               pixels: Array(images[(i * imageBytes)..<((i + 1) * imageBytes)])), &rng)
      size = size ?? (image.height, image.width)
      out += image.pixels
    }
    guard let (h, w) = size else { return self }
    var set = ImageDataset(images: out, labels: labels, count: count, rows: h, cols: w, channels: channels, path: path)
    set.classNames = classNames
    return set
  }

  /// Checks that the images are what the graph's image input takes: channels x rows x cols, the input's
  /// dimensions after N. A mismatch would make every batch read past (or short of) its images.
  public func validateImages(forInput dims: [Int]) throws {
    guard dims.count == 4, dims[1] == channels else {
      throw DataError("the graph's image input is [N, \(dims.dropFirst().map(String.init).joined(separator: ", "))]; the data (\(path)) gives [N, \(channels), \(rows), \(cols)] images")
    }
    guard dims[2] == rows, dims[3] == cols else {
      throw DataError("\(path) holds \(rows)x\(cols) images; the graph takes [N, \(channels), \(dims[2]), \(dims[3])]")
    }
  }

  /// Loads `PREFIX-images-idx3-ubyte[.gz]` and `PREFIX-labels-idx1-ubyte[.gz]` from `dir`.
  public static func load(directory dir: String, split prefix: String) throws -> ImageDataset {
    let imagesPath = try find(dir, "\(prefix)-images-idx3-ubyte")
    let labelsPath = try find(dir, "\(prefix)-labels-idx1-ubyte")
    let img = try parse(try readMaybeGzipped(imagesPath), path: imagesPath, magic: 0x0000_0803)
    let lab = try parse(try readMaybeGzipped(labelsPath), path: labelsPath, magic: 0x0000_0801)
    guard img.dims[0] == lab.dims[0] else {
      throw DataError("\(imagesPath) holds \(img.dims[0]) images but \(labelsPath) holds \(lab.dims[0]) labels")
    }
    return ImageDataset(images: img.data, labels: lab.data, count: img.dims[0], rows: img.dims[1], cols: img.dims[2], path: imagesPath)
  }

  /// The training or test set of a data directory, in whichever format it holds: IDX
  /// (`train-images-idx3-ubyte[.gz]` and labels, `t10k-...`), CIFAR-10 binary (`data_batch_1.bin` ...
  /// `data_batch_5.bin`, `test_batch.bin`), CIFAR-100 binary (`train.bin`, `test.bin`; the fine labels) or
  /// PNG folders per class (`train/CLASS/*.png`, `test/CLASS/*.png`).
  /// `transforms` (deterministic ones: resize, centre crop) apply to every image as it is read: image folders may
  /// then hold photos of any size.
  /// Folders stream when the transforms fix the size (`loadFolders`), with `channels` channels.
  public static func loadSet(directory dir: String, training: Bool, transforms: [ImageTransform] = [], channels: Int? = nil) throws -> ImageDataset {
    if transforms.isEmpty { return try loadSet(directory: dir, training: training) }
    if splitFolder(dir, training: true) != nil { return try loadFolders(directory: dir, training: training, transforms: transforms, channels: channels) }
    guard !transforms.contains(where: \.isRandom) else {
      throw DataError("random_resized_crop reads photo folders (train/CLASS/*.jpg); \(dir) holds a data set of one image size (crop:PAD and flip augment it)")
    }
    return try loadSet(directory: dir, training: training).transformed(by: transforms)
  }

  static func loadSet(directory dir: String, training: Bool) throws -> ImageDataset {
    func exists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: Path.join(dir, name)) }
    if splitFolder(dir, training: true) != nil { return try loadFolders(directory: dir, training: training) }
    if exists("data_batch_1.bin") || exists("test_batch.bin") {
      return try loadCIFAR(directory: dir, files: training ? (1...5).map { "data_batch_\($0).bin" } : ["test_batch.bin"], labelBytes: 1)
    }
    if exists("train.bin") || exists("test.bin") {
      return try loadCIFAR(directory: dir, files: [training ? "train.bin" : "test.bin"], labelBytes: 2)
    }
    if !["train", "t10k"].contains(where: { exists("\($0)-images-idx3-ubyte") || exists("\($0)-images-idx3-ubyte.gz") }), FileManager.default.fileExists(atPath: dir) {
      throw DataError("\(dir) holds no data set cnnc reads: IDX files (train-images-idx3-ubyte[.gz], t10k-...), CIFAR-10 binary "
        + "(data_batch_1.bin ... data_batch_5.bin, test_batch.bin), CIFAR-100 binary (train.bin, test.bin) or PNG folders per class "
        + "(train/CLASS/*.png, test/CLASS/*.png)")
    }
    return try load(directory: dir, split: training ? "train" : "t10k")
  }

  /// CIFAR's binary records: `labelBytes` label bytes (CIFAR-100: coarse, then the fine label used here),
  /// then 3 x 32 x 32 pixels, red, green and blue planes.
  public static let cifarSide = 32, cifarChannels = 3

  /// Loads the CIFAR binary files `files` of `dir`, in order, each a whole number of records.
  public static func loadCIFAR(directory dir: String, files: [String], labelBytes: Int) throws -> ImageDataset {
    let pixels = cifarChannels * cifarSide * cifarSide, record = labelBytes + pixels
    var images: [UInt8] = [], labels: [UInt8] = []
    for name in files {
      let path = Path.join(dir, name)
      guard FileManager.default.fileExists(atPath: path) else { throw DataError("missing data file: \(path) not found (a CIFAR directory has \(files.joined(separator: ", ")))") }
      let bytes = try readMaybeGzipped(path, limit: 1 << 30)
      guard !bytes.isEmpty, bytes.count % record == 0 else {
        throw DataError("\(path): \(bytes.count) bytes is not a whole number of \(record)-byte CIFAR records (\(labelBytes) label byte\(labelBytes > 1 ? "s" : "") + \(pixels) pixels)"
          + (bytes.count > record ? "; truncated or not CIFAR \(labelBytes == 1 ? "10" : "100")" : ""))
      }
      images.reserveCapacity(images.count + bytes.count / record * pixels)
      for r in 0..<(bytes.count / record) {
        labels.append(bytes[r * record + labelBytes - 1])
        images += bytes[(r * record + labelBytes)..<((r + 1) * record)]
      }
    }
    return ImageDataset(images: images, labels: labels, count: labels.count, rows: cifarSide, cols: cifarSide, channels: cifarChannels,
                        path: Path.join(dir, files[0]))
  }

  /// A 64-bit hash of the images, labels and their shape, in hex: tells two data sets apart (a resumed run's from
  /// its checkpoint's) without keeping either. Eight bytes a step, so 47 MB take a few tens of milliseconds.
  public func fingerprint() -> String {
    var h = FingerprintHash()
    for v in [count, rows, cols, channels] { h.mix(UInt64(v)) }
    if let files { return streamedFingerprint(files, &h) }
    for bytes in [images, labels] {
      bytes.withUnsafeBytes { raw in
        let words = raw.count / 8
        for i in 0..<words { h.mix(raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)) }
        for i in (8 * words)..<raw.count { h.mix(UInt64(raw[i])) }
      }
      h.mix(UInt64(bytes.count))
    }
    return h.hex
  }

  /// Checks every label is below `classes`.
  public func validateLabels(classes: Int) throws {
    if let i = labels.firstIndex(where: { Int($0) >= classes }) {
      throw DataError("label \(labels[i]) of example \(i) is out of range: the graph has \(classes) classes")
    }
  }

  static func find(_ dir: String, _ base: String) throws -> String {
    for name in [base + ".gz", base] {
      let p = Path.join(dir, name)
      if FileManager.default.fileExists(atPath: p) { return p }
    }
    throw DataError("missing data file: \(Path.join(dir, base))[.gz] not found")
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

  /// Writes the normalised images (x/255 - mean[c])/std[c] of `indices` into `out` (NCHW); the
  /// normalisation has one mean and std, or one per channel (`Normalization.check`).
  public func normalizedBatch(_ indices: ArraySlice<Int>, into out: inout [Float], _ n: Normalization = .mnist) throws {
    if isStreamed { return try streamedBatch(indices, into: &out, n) }
    let plane = rows * cols, px = imageBytes
    var o = 0
    for i in indices {
      let base = i * px
      for c in 0..<channels {
        let (mean, std) = n.mean.count == 1 ? (n.mean[0], n.std[0]) : (n.mean[c], n.std[c])
        for j in (c * plane)..<((c + 1) * plane) {
          out[o] = (Float(images[base + j]) / 255 - mean) / std
          o += 1
        }
      }
    }
  }

  /// The mean and (population) standard deviation of every pixel of the set, as x/255: one pair for a
  /// one-channel set, one per channel otherwise (torchvision's per-channel recipe).
  /// A streamed set's photos are read for it, one at a time.
  public func measuredNormalization() throws -> Normalization {
    let plane = rows * cols
    var histograms = [[Int]](repeating: [Int](repeating: 0, count: 256), count: channels)
    func tally(_ bytes: [UInt8]) { for (i, p) in bytes.enumerated() { histograms[(i / plane) % channels][Int(p)] += 1 } }
    if isStreamed {
      for i in 0..<count {
        var rng = SeededRandom(seed: 0)
        tally(try pixels(i, &rng))
      }
    } else {
      tally(images)
    }
    var means: [Float] = [], stds: [Float] = []
    for histogram in histograms {
      let n = Double(max(1, histogram.reduce(0, +)))
      let mean = histogram.indices.reduce(0.0) { $0 + Double(histogram[$1]) * Double($1) / 255 } / n
      let variance = histogram.indices.reduce(0.0) { s, v in
        let d = Double(v) / 255 - mean
        return s + Double(histogram[v]) * d * d
      } / n
      means.append(Float(mean))
      stds.append(Float(max(variance.squareRoot(), 1e-6)))
    }
    return Normalization(means: means, stds: stds)
  }

  /// The examples at `indices`, in that order.
  public func subset(_ indices: [Int]) -> ImageDataset {
    if let files { return streamedSubset(indices, files) }
    let px = imageBytes
    var images: [UInt8] = []
    images.reserveCapacity(indices.count * px)
    for i in indices { images += self.images[(i * px)..<((i + 1) * px)] }
    return ImageDataset(images: images, labels: indices.map { labels[$0] }, count: indices.count, rows: rows, cols: cols, channels: channels, path: path)
  }

  /// The training and validation sets: `held` examples chosen by the seed (kept in their original order),
  /// or the last `held`.
  public func validationSplit(held: Int, _ how: TrainingOptions.ValidationSplit, seed: UInt64) -> (ImageDataset, ImageDataset) {
    guard how == .random else { return split(first: count - held) }
    var rng = SeededRandom(seed: seed, stream: Self.validationStream)
    var isHeld = [Bool](repeating: false, count: count)
    for i in rng.permutation(count).prefix(held) { isHeld[i] = true }
    return (subset((0..<count).filter { !isHeld[$0] }), subset((0..<count).filter { isHeld[$0] }))
  }

  /// The random stream of the validation split (distinct from initialisation's, the epochs' and dropout's).
  static let validationStream: UInt64 = 0x7661_6c00

  /// The first `n` examples and the rest (a fixed, unshuffled validation split).
  public func split(first n: Int) -> (ImageDataset, ImageDataset) {
    if let files { return (streamedSubset(Array(0..<n), files), streamedSubset(Array(n..<count), files)) }
    let px = imageBytes
    let a = ImageDataset(images: Array(images[0..<(n * px)]), labels: Array(labels[0..<n]), count: n, rows: rows, cols: cols, channels: channels, path: path)
    let b = ImageDataset(images: Array(images[(n * px)...]), labels: Array(labels[n...]), count: count - n, rows: rows, cols: cols, channels: channels, path: path)
    return (a, b)
  }
}
