import CTurboJPEG
import FileSystem
import Foundation

/// JPEG images through libjpeg-turbo (baseline and progressive, grey and colour), turned upright by their EXIF
/// orientation as cameras record it, to grey or planar RGB.
public enum JPEG {
  /// The most pixels one image may have: a header can claim 65535x65535 (12 GB of RGB) in a few bytes, and that
  /// is refused before anything is allocated. 64 Mpx is above any camera's photo.
  public static let maxPixels = 1 << 26
  /// The largest JPEG file read.
  public static let maxFileBytes = 64 << 20

  /// Whether `bytes` start as a JPEG file does (the SOI marker, then another marker).
  public static func isJPEG(_ bytes: [UInt8]) -> Bool { bytes.count >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF }

  /// The image in its own channels (one plane for grey, three for colour), upright.
  public static func decodePlanar(_ bytes: [UInt8], path: String) throws -> PlanarImage {
    func fail(_ m: String) -> DataError { DataError("\(path): \(m)") }
    guard isJPEG(bytes) else { throw fail("not a JPEG file (no start-of-image marker)") }
    let decoder = try Decompressor(path: path)
    var (width, height, subsampling, colorspace): (Int32, Int32, Int32, Int32) = (0, 0, 0, 0)
    let header = bytes.withUnsafeBufferPointer { tjDecompressHeader3(decoder.handle, $0.baseAddress, UInt($0.count), &width, &height, &subsampling, &colorspace) }
    guard header == 0 else { throw fail("not a readable JPEG (\(decoder.error))") }
    guard width > 0, height > 0 else { throw fail("truncated or corrupt JPEG header (no frame gives the image's size)") }
    guard Int(width) * Int(height) <= maxPixels else {
      throw fail("absurd size \(width)x\(height) (at most \(maxPixels >> 20) Mpx are read)")
    }
    let grey = colorspace == Int32(TJCS_GRAY.rawValue)
    let channels = grey ? 1 : 3, (w, h) = (Int(width), Int(height))
    var interleaved = [UInt8](repeating: 0, count: w * h * channels)
    // Warnings (a truncated file, corrupt data the decoder would paper over with grey) are errors here, and a
    // progressive file with an absurd number of scans is refused instead of decoded for minutes.
    let flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS
    let status = bytes.withUnsafeBufferPointer { src in
      interleaved.withUnsafeMutableBufferPointer { dst in
        tjDecompress2(decoder.handle, src.baseAddress, UInt(src.count), dst.baseAddress, width, 0, height,
                      grey ? Int32(TJPF_GRAY.rawValue) : Int32(TJPF_RGB.rawValue), flags)
      }
    }
    guard status == 0 else { throw fail("corrupt or truncated JPEG data (\(decoder.error))") }
    var pixels = [UInt8](repeating: 0, count: w * h * channels)
    for c in 0..<channels { for i in 0..<(w * h) { pixels[c * w * h + i] = interleaved[i * channels + c] } }
    return oriented(PlanarImage(width: w, height: h, channels: channels, pixels: pixels), exifOrientation(bytes))
  }

  /// An owned TurboJPEG decompressor.
  final class Decompressor {
    let handle: tjhandle
    init(path: String) throws {
      guard let h = tjInitDecompress() else { throw DataError("\(path): the JPEG decoder could not start") }
      handle = h
    }
    deinit { tjDestroy(handle) }
    /// The decoder's message for its last failure.
    var error: String { tjGetErrorStr2(handle).map { String(cString: $0) } ?? "unknown error" }
  }

  /// The EXIF orientation tag (0x0112) of the file's APP1 segment: 1 (upright) to 8, or 1 when there is none or
  /// it does not parse. Only the markers before the image data are read.
  static func exifOrientation(_ b: [UInt8]) -> Int {
    var pos = 2
    while pos + 4 <= b.count, b[pos] == 0xFF {
      let marker = b[pos + 1], length = Int(b[pos + 2]) << 8 | Int(b[pos + 3])
      // Start of scan: the image data follows, and with it no more metadata.
      guard marker != 0xDA, length >= 2, pos + 2 + length <= b.count else { return 1 }
      if marker == 0xE1, length >= 16, b[(pos + 4)..<(pos + 10)].elementsEqual([0x45, 0x78, 0x69, 0x66, 0, 0]) {
        return tiffOrientation(Array(b[(pos + 10)..<(pos + 2 + length)])) ?? 1
      }
      pos += 2 + length
    }
    return 1
  }

  /// The orientation entry of a TIFF header's first directory (EXIF's layout), in either byte order.
  static func tiffOrientation(_ t: [UInt8]) -> Int? {
    guard t.count >= 8 else { return nil }
    let little = t[0] == 0x49 && t[1] == 0x49
    guard little || (t[0] == 0x4D && t[1] == 0x4D) else { return nil }
    func u16(_ o: Int) -> Int? { o >= 0 && o + 2 <= t.count ? (little ? Int(t[o]) | Int(t[o + 1]) << 8 : Int(t[o]) << 8 | Int(t[o + 1])) : nil }
    func u32(_ o: Int) -> Int? { u16(o).flatMap { a in u16(o + 2).map { b in little ? a | b << 16 : a << 16 | b } } }
    guard let directory = u32(4), let entries = u16(directory) else { return nil }
    for e in 0..<entries {
      let at = directory + 2 + 12 * e
      guard let tag = u16(at) else { return nil }
      if tag == 0x0112, let value = u16(at + 8), (1...8).contains(value) { return value }
    }
    return nil
  }

  /// The image as it is meant to be seen under EXIF orientation `o`: 2-4 mirror or turn it in its frame, 5-8 also
  /// swap its width and height. Each displayed pixel (x, y) reads the stored pixel this returns.
  static func oriented(_ image: PlanarImage, _ o: Int) -> PlanarImage {
    guard (2...8).contains(o) else { return image }
    let (w, h) = (image.width, image.height), swaps = o >= 5
    let (ow, oh) = swaps ? (h, w) : (w, h)
    // Stored (column, row) of displayed (x, y); the EXIF standard names row 0 and column 0 of the stored image.
    let source: (Int, Int) -> (Int, Int) = switch o {
    case 2: { x, y in (w - 1 - x, y) }
    case 3: { x, y in (w - 1 - x, h - 1 - y) }
    case 4: { x, y in (x, h - 1 - y) }
    case 5: { x, y in (y, x) }
    case 6: { x, y in (y, h - 1 - x) }
    case 7: { x, y in (w - 1 - y, h - 1 - x) }
    default: { x, y in (w - 1 - y, x) }
    }
    var pixels = [UInt8](repeating: 0, count: image.pixels.count)
    for c in 0..<image.channels {
      for y in 0..<oh {
        for x in 0..<ow {
          let (sx, sy) = source(x, y)
          pixels[c * ow * oh + y * ow + x] = image.pixels[c * w * h + sy * w + sx]
        }
      }
    }
    return PlanarImage(width: ow, height: oh, channels: image.channels, pixels: pixels)
  }
}

/// Image files as the commands read them: PNG or JPEG, told apart by their first bytes (whatever the name says).
public enum ImageFile {
  /// The file name endings image folders and `predict` take.
  public static let extensions = [".png", ".jpg", ".jpeg"]

  /// Whether `name` ends as an image file's name (any case).
  public static func isImageName(_ name: String) -> Bool { extensions.contains { name.lowercased().hasSuffix($0) } }

  /// The file at `path`, decoded: grey or planar RGB, upright.
  public static func read(_ path: String) throws -> PlanarImage {
    try decode(try readRegularFile(path, maxBytes: max(ImageDataset.maxPNGBytes, JPEG.maxFileBytes)), path: path)
  }

  /// The image files `path` names: a directory's PNGs and JPEGs sorted by name (at least one), or the file itself
  /// when its name is an image's; nil for anything else (an array or data file the caller reads its own way).
  public static func paths(named path: String) throws -> [String]? {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
      let names = try FileManager.default.contentsOfDirectory(atPath: path).filter(isImageName).sorted()
      guard !names.isEmpty else { throw DataError("\(path) holds no \(extensions.joined(separator: ", ")) files") }
      return names.map { Path.join(path, $0) }
    }
    return isImageName(path) ? [path] : nil
  }

  /// The file at `path` after `transforms`, with `channels` channels (grey's luma, or grey replicated), which must
  /// then be `width` x `height`: what a model of that input takes.
  public static func read(_ path: String, transforms: [ImageTransform], channels: Int, height: Int, width: Int) throws -> PlanarImage {
    var rng = SeededRandom(seed: 0)
    let picture = try transforms.apply(try read(path), &rng, path: path).converted(to: channels)
    guard picture.width == width, picture.height == height else {
      let size = "\(picture.width)x\(picture.height)", takes = "the graph takes \(width)x\(height) images"
      throw DataError(transforms.isEmpty
        ? "\(path) is \(size); \(takes) (--transform resize:\(min(width, height)),center_crop:\(height)x\(width) makes any photo fit)"
        : "\(path) is \(size) after --transform \(transforms.spec); \(takes)")
    }
    return picture
  }

  /// Decodes PNG or JPEG bytes; `path` names the file in messages.
  public static func decode(_ bytes: [UInt8], path: String) throws -> PlanarImage {
    if JPEG.isJPEG(bytes) { return try JPEG.decodePlanar(bytes, path: path) }
    if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return try PNG.decodePlanar(bytes, path: path) }
    throw DataError("\(path): neither a PNG nor a JPEG file (its first bytes are neither signature)")
  }
}
