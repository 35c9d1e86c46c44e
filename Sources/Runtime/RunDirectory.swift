import FileSystem
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The files of one training run, committed as a unit.
///
/// Every checkpoint is a directory `checkpoints/step-N` holding the weights, the optimiser state and the
/// history of that step. It is written under a temporary name, each file flushed to disk, and renamed into
/// place in one `rename`, so a kill or a full disk at any instant leaves every earlier checkpoint whole; the
/// newest `keep` checkpoints are kept. The run directory's `weights.safetensors`, `optimizer.safetensors`
/// and `history.json` are then pointed at the new checkpoint's files (hard links, each swapped in by a
/// rename), for eval, report and other tools. `--resume` reads the newest complete checkpoint.
public struct RunDirectory: Sendable {
  public let path: String
  /// Checkpoints kept: the newest and the one before it, in case the newest is damaged later.
  public static let keep = 2
  /// The files of a checkpoint, by name.
  public static let weightsFile = "weights.safetensors", optimizerFile = "optimizer.safetensors", historyFile = "history.json"

  public init(_ path: String) { self.path = path }

  public var checkpointsPath: String { Path.join(path, "checkpoints") }
  public func file(_ name: String) -> String { Path.join(path, name) }
  static func stepName(_ step: Int) -> String { String(format: "step-%012d", step) }

  /// Commits one checkpoint: `files` (name, bytes) under `checkpoints/step-N`, then the top-level links.
  public func save(step: Int, files: [(name: String, bytes: [UInt8])]) throws {
    let fm = FileManager.default
    try makeDirectory(checkpointsPath)
    let tmp = Path.join(checkpointsPath, ".tmp-\(Self.stepName(step))-\(getpid())")
    try? fm.removeItem(atPath: tmp)
    try makeDirectory(tmp)
    do {
      for f in files { try writeDurably(f.bytes, to: Path.join(tmp, f.name)) }
      try syncDirectory(tmp)
      let final = Path.join(checkpointsPath, Self.stepName(step))
      // A checkpoint of the same step (saved again after an interruption) is replaced, not merged.
      if fm.fileExists(atPath: final) {
        let old = Path.join(checkpointsPath, ".old-\(Self.stepName(step))-\(getpid())")
        try renameOrThrow(final, old)
        try? fm.removeItem(atPath: old)
      }
      try renameOrThrow(tmp, final)
      try syncDirectory(checkpointsPath)
      for f in files {
        let link = file(".\(f.name).tmp-\(getpid())")
        unlink(link)
        guard Glibc.link(Path.join(final, f.name), link) == 0 else { throw systemError("cannot link \(link)") }
        try renameOrThrow(link, file(f.name))
      }
      try syncDirectory(path)
    } catch {
      try? fm.removeItem(atPath: tmp)
      throw error
    }
    for old in checkpointSteps().dropFirst(Self.keep) {
      try? fm.removeItem(atPath: Path.join(checkpointsPath, Self.stepName(old)))
    }
  }

  /// Steps of the committed checkpoints, newest first.
  public func checkpointSteps() -> [Int] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: checkpointsPath)) ?? []
    return names.compactMap { n in n.hasPrefix("step-") ? Int(n.dropFirst(5)) : nil }.sorted(by: >)
  }

  /// The step of the newest checkpoint, or of the top-level weights of a run written before checkpoints had
  /// directories; nil for a directory that holds no run.
  public func newestStep() -> Int? {
    if let step = checkpointSteps().first { return step }
    return fileStatus(file(Self.weightsFile)) == nil ? nil : 0
  }

  /// Deletes a run's checkpoints and the files that point at them (for a fresh run that replaces it); the lock,
  /// and anything that is not cnnc's, stay.
  public func removeRun() throws {
    let fm = FileManager.default
    for name in [Self.weightsFile, Self.optimizerFile, Self.historyFile, "best.safetensors", "report.html", "model.graph"] {
      if unlink(file(name)) != 0 && errno != ENOENT { throw systemError("cannot remove \(file(name))") }
    }
    if fileStatus(checkpointsPath) != nil {
      do { try fm.removeItem(atPath: checkpointsPath) } catch { throw DataError("cannot remove \(checkpointsPath): \(String(describing: (error as NSError).localizedFailureReason ?? error.localizedDescription))") }
    }
  }

  /// The directory of the checkpoint at `step`.
  public func checkpoint(_ step: Int) -> String { Path.join(checkpointsPath, Self.stepName(step)) }

  /// Removes what killed runs left behind: temporary checkpoint directories and files, and checkpoints
  /// beyond the newest `keep` (a kill between committing one and pruning leaves one more). Call it while
  /// holding the run's lock, so no live run's files are touched.
  public func removeStaleTemporaries() {
    let fm = FileManager.default
    for old in checkpointSteps().dropFirst(Self.keep) { try? fm.removeItem(atPath: checkpoint(old)) }
    // Temporaries are hidden names with a `.tmp-PID` part, or a replaced checkpoint's `.old-...` directory.
    for dir in [path, checkpointsPath] {
      for name in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix(".old-") || (name.hasPrefix(".") && name.contains(".tmp-")) {
        try? fm.removeItem(atPath: Path.join(dir, name))
      }
    }
  }
}

/// An exclusive lock on a run directory (`.lock`, holding the owner's PID), released when the process ends
/// or the lock is freed: a second run on the same `--out` is refused instead of mixing two runs' files.
public final class RunLock {
  private let fd: Int32
  public let path: String

  public init(directory: String) throws {
    try makeDirectory(directory)
    path = Path.join(directory, ".lock")
    // Never through a symbolic link (a planted `.lock -> /etc/passwd` would have a root-run cnnc overwrite its
    // target with a PID), and only a regular file of this user's.
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0o644)
    guard fd >= 0 else {
      if errno == ELOOP { throw DataError("\(path) is a symbolic link; remove it (a run directory's lock file must be a regular file)") }
      throw DataError("cannot create the lock file \(path): \(String(cString: strerror(errno)))")
    }
    var st = stat()
    guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid() else {
      close(fd)
      throw DataError("\(path) is not a regular file of this user's; remove it (a run directory's lock file must be)")
    }
    guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
      var buffer = [UInt8](repeating: 0, count: 32)
      let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
      let owner = String(decoding: buffer.prefix(max(0, n)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
      close(fd)
      throw DataError("\(directory) is in use by another cnnc run\(Int(owner) == nil ? "" : " (PID \(owner))"); wait for it to finish or choose another --out")
    }
    let pid = Array("\(getpid())\n".utf8)
    _ = ftruncate(fd, 0)
    _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
  }

  deinit { close(fd) }
}

