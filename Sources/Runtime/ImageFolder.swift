import FileSystem
import Foundation

/// Folders of PNG and JPEG images, one subfolder per class (the ImageFolder layout): `DIR/train/CLASS/*.png` (or
/// `.jpg`, `.jpeg`, mixed) for training and `DIR/test/CLASS/...` (or `DIR/val/...`) for evaluation.
extension ImageDataset {
  /// The split folders a data directory in this layout has, in the order they are looked for.
  public static let folderSplits = (training: ["train"], test: ["test", "val"])
  /// Labels are bytes, so a data set has at most this many classes.
  public static let maxFolderClasses = 256

  /// The split folder of `dir` for training or evaluation, when `dir` is in the folder layout.
  static func splitFolder(_ dir: String, training: Bool) -> String? {
    (training ? folderSplits.training : folderSplits.test).lazy
      .map { Path.join(dir, $0) }
      .first { isDirectory($0) }
  }

  static func isDirectory(_ path: String) -> Bool {
    var directory: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &directory) && directory.boolValue
  }

  /// The class names of a folder-layout data directory: its training split's subfolders, sorted (so
  /// class k is the k-th name in byte order, as the ImageFolder convention numbers them).
  public static func folderClasses(_ dir: String) throws -> [String] {
    guard let train = splitFolder(dir, training: true) else { throw DataError("\(dir) has no train/ folder of class folders") }
    let names = try FileManager.default.contentsOfDirectory(atPath: train).filter { !$0.hasPrefix(".") && isDirectory(Path.join(train, $0)) }
    guard !names.isEmpty else { throw DataError("\(train) holds no class folders (the layout is \(train)/CLASS/IMAGE.png)") }
    guard names.count <= maxFolderClasses else { throw DataError("\(train) has \(names.count) class folders; cnnc reads at most \(maxFolderClasses) classes") }
    return names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
  }

  /// Loads one split of a folder-layout directory: every image of every class folder, classes in
  /// `folderClasses` order and files by name within a class, each after `transforms`. Transforms that end in a
  /// fixed size (`center_crop:N`, `resize:HxW`, `random_resized_crop:N`) stream the folder: the set holds the
  /// paths and reads each photo per batch (`PhotoFiles`), with `channels` channels (the graph's; else the first
  /// photo's). Otherwise every image is decoded now and must then have one size; any colour image makes the set
  /// three-channel (grey images are then replicated into the three planes).
  public static func loadFolders(directory dir: String, training: Bool, transforms: [ImageTransform] = [], channels: Int? = nil) throws -> ImageDataset {
    let classes = try folderClasses(dir)
    guard let root = splitFolder(dir, training: training) else {
      throw DataError("\(dir) has a train/ folder but no \((training ? folderSplits.training : folderSplits.test).joined(separator: "/ or "))/ folder for \(training ? "training" : "evaluation")")
    }
    let present = try FileManager.default.contentsOfDirectory(atPath: root).filter { !$0.hasPrefix(".") && isDirectory(Path.join(root, $0)) }
    if let stray = present.first(where: { !classes.contains($0) }) {
      throw DataError("\(root)/\(stray) is not one of the training classes (\(classes.joined(separator: ", ")))")
    }
    var files: [(path: String, label: UInt8)] = []
    for (label, name) in classes.enumerated() {
      let folder = Path.join(root, name)
      guard isDirectory(folder) else { continue }
      for file in try FileManager.default.contentsOfDirectory(atPath: folder).filter({ !$0.hasPrefix(".") }).sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
        let path = Path.join(folder, file)
        guard ImageFile.isImageName(file) else {
          throw DataError("\(path): only PNG and JPEG images are read (class folders hold \(ImageFile.extensions.joined(separator: ", ")) files)")
        }
        files.append((path, UInt8(label)))
      }
    }
    guard let first = files.first else { throw DataError("\(root) holds no PNG or JPEG images in its class folders") }
    var set: ImageDataset
    if let (h, w) = transforms.outputSize {
      let c = try channels ?? ImageFile.read(first.path).channels
      set = ImageDataset(files: PhotoFiles(paths: files.map(\.path), transforms: transforms), labels: files.map(\.label), rows: h, cols: w, channels: c, path: root)
    } else {
      set = try decodedFolder(files, transforms: transforms, root: root)
    }
    set.classNames = classes
    return set
  }

  /// Every image of `files` decoded and transformed now, held as one set of one size.
  static func decodedFolder(_ files: [(path: String, label: UInt8)], transforms: [ImageTransform], root: String) throws -> ImageDataset {
    var decoded: [PlanarImage] = []
    for (path, _) in files {
      var rng = SeededRandom(seed: 0)
      let image = try transforms.apply(try ImageFile.decode(try readMaybeGzipped(path, limit: max(maxPNGBytes, JPEG.maxFileBytes)), path: path), &rng, path: path)
      if let first = decoded.first, (first.width, first.height) != (image.width, image.height) {
        let how = transforms.isEmpty ? "every image of a data set has one size (--transform resize:N,center_crop:N makes photos of any size one)"
                                     : "--transform \(transforms.spec) leaves images of two sizes; end it with a crop (center_crop:N) or resize:HxW"
        throw DataError("\(path) is \(image.width)x\(image.height), but the images before it are \(first.width)x\(first.height); \(how)")
      }
      decoded.append(image)
    }
    let channels = decoded.contains { $0.channels == 3 } ? 3 : 1
    var images: [UInt8] = []
    images.reserveCapacity(decoded.count * channels * decoded[0].width * decoded[0].height)
    for image in decoded { images += image.converted(to: channels).pixels }
    return ImageDataset(images: images, labels: files.map(\.label), count: files.count, rows: decoded[0].height, cols: decoded[0].width,
                        channels: channels, path: root)
  }

  /// The largest PNG file read as one image.
  public static let maxPNGBytes = 64 << 20
}
