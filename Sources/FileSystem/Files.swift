#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A file that cannot be read or written as asked: the message names the file and the cause.
public struct FileError: Error, CustomStringConvertible, Sendable {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// An error from a system call, with the C library's words for `errno`.
public func systemError(_ what: String) -> FileError {
  FileError("\(what): \(String(cString: strerror(errno)))")
}

/// What a file that is not a regular one is, in words.
func kindName(_ mode: mode_t) -> String {
  switch mode & S_IFMT {
  case S_IFDIR: "a directory"
  case S_IFIFO: "a FIFO"
  case S_IFCHR, S_IFBLK: "a device"
  case S_IFSOCK: "a socket"
  case S_IFLNK: "a symbolic link"
  default: "not a regular file"
  }
}

/// An open regular file, closed when the value goes away. Opening never blocks (a FIFO is refused after a
/// non-blocking open), so a reader handed a FIFO, a device or a directory fails at once with its kind named.
public final class RegularFile {
  public let path: String
  public let size: Int
  let fd: Int32

  /// Opens `path` for reading; with `noFollow`, a symbolic link as the last component is refused.
  public init(_ path: String, noFollow: Bool = false) throws {
    guard !path.isEmpty else { throw FileError("the file name is empty") }
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (noFollow ? O_NOFOLLOW : 0))
    guard fd >= 0 else {
      if errno == ELOOP && noFollow { throw FileError("\(path) is a symbolic link; it must be a regular file") }
      throw systemError("cannot read \(path)")
    }
    var st = stat()
    guard fstat(fd, &st) == 0 else {
      let e = systemError("cannot read \(path)")
      close(fd)
      throw e
    }
    guard st.st_mode & S_IFMT == S_IFREG else {
      close(fd)
      throw FileError("\(path) is \(kindName(st.st_mode)), not a regular file")
    }
    self.path = path
    self.fd = fd
    size = Int(st.st_size)
  }

  deinit { close(fd) }

  /// `count` bytes at `offset`, checked against the file's size first (a range past its end is an error, not a
  /// short read); a read error or a file that shrank while read is an error too.
  public func read(offset: Int, count: Int) throws -> [UInt8] {
    guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
      throw FileError("\(path): the range of \(count) bytes at offset \(offset) is outside the file's \(size) bytes")
    }
    var out = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
      let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
      if n < 0 && errno == EINTR { continue }
      if n < 0 { throw systemError("cannot read \(path)") }
      guard n > 0 else { throw FileError("\(path): the file ended after \(offset + done) bytes while it was read") }
      done += n
    }
    return out
  }

  /// The whole file.
  public func readAll() throws -> [UInt8] { try read(offset: 0, count: size) }
}

/// The bytes of the regular file at `path`, at most `maxBytes` of them (a larger file is an error naming the limit).
public func readRegularFile(_ path: String, maxBytes: Int) throws -> [UInt8] {
  let f = try RegularFile(path)
  guard f.size <= maxBytes else { throw FileError("\(path): \(f.size) bytes is more than the \(maxBytes) bytes a file of this kind may have") }
  return try f.readAll()
}

/// Refuses anything but a regular file (after following symbolic links) before it is opened by another reader:
/// reading a FIFO or a device would block or never end.
public func requireRegularFile(_ path: String) throws {
  _ = try RegularFile(path)
}

/// The canonical absolute path of an existing file (symbolic links resolved), or nil.
public func resolvedPath(_ path: String) -> String? {
  guard let p = realpath(path, nil) else { return nil }
  defer { free(p) }
  return String(cString: p)
}

/// Whether `path`, with every symbolic link resolved, is inside `directory` (also resolved).
public func isInside(_ path: String, directory: String) -> Bool {
  guard let file = resolvedPath(path), let dir = resolvedPath(directory) else { return false }
  return file.hasPrefix(dir == "/" ? "/" : dir + "/")
}

/// The mode, owner and kind of `path` (symbolic links followed), or nil if it does not exist.
public func fileStatus(_ path: String) -> stat? {
  var st = stat()
  return stat(path, &st) == 0 ? st : nil
}

/// Whether `path` exists and is a directory (following symbolic links).
public func isDirectory(_ path: String) -> Bool {
  fileStatus(path).map { $0.st_mode & S_IFMT == S_IFDIR } ?? false
}

/// Creates a directory and its parents (mode `mode`, less the umask); a path that exists as something else is a
/// clear error.
public func makeDirectory(_ path: String, mode: mode_t = 0o755) throws {
  guard !path.isEmpty else { throw FileError("the directory name is empty") }
  if let st = fileStatus(path) {
    guard st.st_mode & S_IFMT == S_IFDIR else { throw FileError("\(path) exists and is not a directory") }
    return
  }
  let parent = Path.parent(path)
  if parent != path, parent != ".", parent != "/" { try makeDirectory(parent, mode: mode) }
  guard mkdir(path, mode) == 0 || errno == EEXIST else { throw systemError("cannot create directory \(path)") }
}

/// Creates (mode 0700) or checks a directory that holds what only this user may write, such as code cnnc
/// will execute: it must be a directory owned by this user that no one else can write. Returns the problem
/// in words when it is not, or nil.
public func preparePrivateDirectory(_ path: String) throws -> String? {
  try makeDirectory(path, mode: 0o700)
  guard let st = fileStatus(path) else { throw systemError("cannot inspect \(path)") }
  if st.st_uid != geteuid() { return "\(path) belongs to another user (uid \(st.st_uid))" }
  if st.st_mode & 0o022 != 0 { return "\(path) can be written by other users (mode \(String(st.st_mode & 0o777, radix: 8)))" }
  return nil
}

/// A new private directory (mode 0700, a name no one else holds) in the system's temporary directory.
public func makeTemporaryDirectory(prefix: String) throws -> String {
  let base = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
  var template = Array(Path.join(base, "\(prefix)-XXXXXX").utf8CString)
  guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
    throw systemError("cannot create a temporary directory in \(base)")
  }
  return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Writes `bytes` to `path` (created or truncated) and flushes them to disk; errors name the file and the cause.
public func writeDurably(_ bytes: [UInt8], to path: String) throws {
  let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
  guard fd >= 0 else { throw systemError("cannot create \(path)") }
  defer { close(fd) }
  try writeAll(bytes, fd, path)
  guard fsync(fd) == 0 else { throw systemError("cannot flush \(path) to disk") }
}

/// Writes `bytes` into an existing special file (a device, a FIFO with a reader), without creating or truncating.
func writeInto(_ bytes: [UInt8], _ path: String) throws {
  let fd = open(path, O_WRONLY | O_CLOEXEC | O_NONBLOCK)
  guard fd >= 0 else { throw systemError("cannot write \(path)") }
  defer { close(fd) }
  try writeAll(bytes, fd, path)
}

/// Every byte to `fd`, retrying interrupted and partial writes.
func writeAll(_ bytes: [UInt8], _ fd: Int32, _ path: String) throws {
  var done = 0
  while done < bytes.count {
    let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
    if n < 0 && errno == EINTR { continue }
    guard n > 0 else { throw systemError("cannot write \(path)") }
    done += n
  }
}

/// Refuses an output path that can only name a directory ("out/", ".") or names an existing directory.
public func checkOutputFile(_ path: String) throws {
  guard !path.isEmpty else { throw FileError("the output file name is empty") }
  if Path.namesDirectory(path) || isDirectory(path) {
    throw FileError("\(path) names a directory; give the name of a file to write (e.g. \(Path.join(Path.trimmingTrailingSlashes(path), "out")))")
  }
}

/// Writes a file atomically: a flushed temporary file beside it, renamed over it. A path naming a directory is
/// refused before anything is written.
///
/// A path that names an existing device, FIFO or socket (`-o /dev/null`, `/dev/stdout`) is written into, never
/// renamed over: renaming would replace the device itself with a regular file.
public func writeAtomically(_ bytes: [UInt8], to path: String) throws {
  try checkOutputFile(path)
  if let st = fileStatus(path), st.st_mode & S_IFMT != S_IFREG {
    try writeInto(bytes, path)
    return
  }
  let dir = Path.parent(path)
  try makeDirectory(dir)
  let tmp = Path.join(dir, ".\(Path.lastComponent(path)).tmp-\(getpid())")
  do {
    try writeDurably(bytes, to: tmp)
    try renameOrThrow(tmp, path)
  } catch {
    unlink(tmp)
    throw error
  }
}

/// `rename(2)`, with the cause in words when it fails.
public func renameOrThrow(_ from: String, _ to: String) throws {
  guard rename(from, to) == 0 else { throw systemError("cannot rename \(from) to \(to)") }
}

/// Flushes a directory's entries (the renames into it) to disk.
public func syncDirectory(_ path: String) throws {
  let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
  guard fd >= 0 else { throw systemError("cannot open directory \(path)") }
  defer { close(fd) }
  guard fsync(fd) == 0 else { throw systemError("cannot flush directory \(path)") }
}
