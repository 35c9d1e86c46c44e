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

  public var checkpointsPath: String { (path as NSString).appendingPathComponent("checkpoints") }
  public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
  static func stepName(_ step: Int) -> String { String(format: "step-%012d", step) }

  /// Commits one checkpoint: `files` (name, bytes) under `checkpoints/step-N`, then the top-level links.
  public func save(step: Int, files: [(name: String, bytes: [UInt8])]) throws {
    let fm = FileManager.default
    try makeDirectory(checkpointsPath)
    let tmp = (checkpointsPath as NSString).appendingPathComponent(".tmp-\(Self.stepName(step))-\(getpid())")
    try? fm.removeItem(atPath: tmp)
    try makeDirectory(tmp)
    do {
      for f in files { try writeDurably(f.bytes, to: (tmp as NSString).appendingPathComponent(f.name)) }
      try syncDirectory(tmp)
      let final = (checkpointsPath as NSString).appendingPathComponent(Self.stepName(step))
      // A checkpoint of the same step (saved again after an interruption) is replaced, not merged.
      if fm.fileExists(atPath: final) {
        let old = (checkpointsPath as NSString).appendingPathComponent(".old-\(Self.stepName(step))-\(getpid())")
        try renameOrThrow(final, old)
        try? fm.removeItem(atPath: old)
      }
      try renameOrThrow(tmp, final)
      try syncDirectory(checkpointsPath)
      for f in files {
        let link = file(".\(f.name).tmp-\(getpid())")
        unlink(link)
        guard Glibc.link((final as NSString).appendingPathComponent(f.name), link) == 0 else { throw systemError("cannot link \(link)") }
        try renameOrThrow(link, file(f.name))
      }
      try syncDirectory(path)
    } catch {
      try? fm.removeItem(atPath: tmp)
      throw error
    }
    for old in checkpointSteps().dropFirst(Self.keep) {
      try? fm.removeItem(atPath: (checkpointsPath as NSString).appendingPathComponent(Self.stepName(old)))
    }
  }

  /// Steps of the committed checkpoints, newest first.
  public func checkpointSteps() -> [Int] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: checkpointsPath)) ?? []
    return names.compactMap { n in n.hasPrefix("step-") ? Int(n.dropFirst(5)) : nil }.sorted(by: >)
  }

  /// The directory of the checkpoint at `step`.
  public func checkpoint(_ step: Int) -> String { (checkpointsPath as NSString).appendingPathComponent(Self.stepName(step)) }

  /// Removes what killed runs left behind: temporary checkpoint directories and files, and checkpoints
  /// beyond the newest `keep` (a kill between committing one and pruning leaves one more). Call it while
  /// holding the run's lock, so no live run's files are touched.
  public func removeStaleTemporaries() {
    let fm = FileManager.default
    for old in checkpointSteps().dropFirst(Self.keep) { try? fm.removeItem(atPath: checkpoint(old)) }
    // Temporaries are hidden names with a `.tmp-PID` part, or a replaced checkpoint's `.old-...` directory.
    for dir in [path, checkpointsPath] {
      for name in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix(".old-") || (name.hasPrefix(".") && name.contains(".tmp-")) {
        try? fm.removeItem(atPath: (dir as NSString).appendingPathComponent(name))
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
    path = (directory as NSString).appendingPathComponent(".lock")
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw systemError("cannot create the lock file \(path)") }
    guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
      let owner = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
      close(fd)
      throw DataError("\(directory) is in use by another cnnc run\(owner.isEmpty ? "" : " (PID \(owner))"); wait for it to finish or choose another --out")
    }
    let pid = Array("\(getpid())\n".utf8)
    _ = ftruncate(fd, 0)
    _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
  }

  deinit { close(fd) }
}

/// An error from a system call, with the C library's words for errno (no NSError dump).
func systemError(_ what: String) -> DataError {
  DataError("\(what): \(String(cString: strerror(errno)))")
}

/// Creates a directory and its parents; a path that exists as something else is a clear error.
func makeDirectory(_ path: String) throws {
  var isDir: ObjCBool = false
  if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
    guard isDir.boolValue else { throw DataError("\(path) exists and is not a directory") }
    return
  }
  guard !path.isEmpty else { throw DataError("the output directory name is empty") }
  let parent = (path as NSString).deletingLastPathComponent
  if !parent.isEmpty, parent != path { try makeDirectory(parent) }
  guard mkdir(path, 0o755) == 0 || errno == EEXIST else { throw systemError("cannot create directory \(path)") }
}

/// Writes `bytes` to `path` (created or truncated) and flushes them to disk; errors name the file and the cause.
public func writeDurably(_ bytes: [UInt8], to path: String) throws {
  let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
  guard fd >= 0 else { throw systemError("cannot create \(path)") }
  defer { close(fd) }
  var done = 0
  while done < bytes.count {
    let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
    if n < 0 && errno == EINTR { continue }
    guard n > 0 else { throw systemError("cannot write \(path)") }
    done += n
  }
  guard fsync(fd) == 0 else { throw systemError("cannot flush \(path) to disk") }
}

/// Writes a file atomically: a flushed temporary file beside it, renamed over it.
public func writeAtomically(_ bytes: [UInt8], to path: String) throws {
  let dir = (path as NSString).deletingLastPathComponent
  try makeDirectory(dir.isEmpty ? "." : dir)
  let tmp = ((dir.isEmpty ? "." : dir) as NSString).appendingPathComponent(".\((path as NSString).lastPathComponent).tmp-\(getpid())")
  do {
    try writeDurably(bytes, to: tmp)
    try renameOrThrow(tmp, path)
  } catch {
    unlink(tmp)
    throw error
  }
}

func renameOrThrow(_ from: String, _ to: String) throws {
  guard rename(from, to) == 0 else { throw systemError("cannot rename \(from) to \(to)") }
}

/// Flushes a directory's entries (the renames into it) to disk.
func syncDirectory(_ path: String) throws {
  let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
  guard fd >= 0 else { throw systemError("cannot open directory \(path)") }
  defer { close(fd) }
  guard fsync(fd) == 0 else { throw systemError("cannot flush directory \(path)") }
}

/// Refuses anything but a regular file before it is opened: reading a FIFO or a device would block or never end.
public func requireRegularFile(_ path: String) throws {
  var st = stat()
  guard stat(path, &st) == 0 else { throw systemError("cannot read \(path)") }
  let kind = st.st_mode & S_IFMT
  guard kind == S_IFREG else {
    let what = kind == S_IFDIR ? "a directory" : kind == S_IFIFO ? "a FIFO" : kind == S_IFCHR || kind == S_IFBLK ? "a device" : kind == S_IFSOCK ? "a socket" : "not a regular file"
    throw DataError("\(path) is \(what), not a regular file")
  }
}
