import CLLVM
import FileSystem
import Foundation
import Lowering

/// Object code of optimised modules on disk, so that compiling a module the JIT has compiled before
/// (the same graph, batch and target on a later run) reads its object code instead of optimising and
/// generating it again.
///
/// An entry's key is the SHA-256 of everything the object code is made from: the module as LLVM bitcode
/// before optimisation (so any change in lowering or rendering is a new key), the target (triple, CPU,
/// features), the optimisation pipeline and LLVM's version. An entry holds a header (`magic`, its key,
/// the payload's length and SHA-256) and the object code; one that does not check out in every field
/// (truncated, written by another version, damaged) is a miss and is written anew. Entries are written
/// to a temporary file and renamed, so a reader never sees half an entry, and a cache of more than
/// `maxEntries` drops its least recently used. A cache that cannot be read or written costs its
/// compiles nothing but the attempt: they go on uncached.
public final class ObjectCache: Sendable {
  public let directory: URL
  public let maxEntries: Int
  /// The first bytes of an entry; the digit is the entry format's version.
  static let magic = Array("cnnc-object-1\n".utf8)
  /// Entries kept: SimpleCNN's programs (training step and evaluation, two modules each) are about ten;
  /// 256 keep a few dozen graphs, batches and targets (tens of MB).
  public static let defaultMaxEntries = 256

  /// Why this cache is not used, or nil: it holds code this process executes, so it must be a directory of this
  /// user's that no one else can write (created mode 0700 when missing). A cache that cannot be created at all
  /// is not refused: its compiles go on uncached.
  public let refusal: String?

  /// The largest entry read (an object of a few hundred layers is a few MB).
  static let maxEntryBytes = 1 << 30

  public init(directory: URL, maxEntries: Int = ObjectCache.defaultMaxEntries) {
    self.directory = directory
    self.maxEntries = max(1, maxEntries)
    refusal = (try? preparePrivateDirectory(directory.path)) ?? nil
  }

  /// `objects` in the cache root (`cacheRoot`: `$CNNC_CACHE`, else `$XDG_CACHE_HOME/cnnc` or `~/.cache/cnnc`).
  public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
    URL(fileURLWithPath: cacheRoot(environment: environment)).appendingPathComponent("objects")
  }

  /// The key of `module` (not yet optimised) compiled for `target` with `pipeline`.
  public static func key(_ module: Module, target: Target, pipeline: String) -> String {
    var h = SHA256()
    var major: UInt32 = 0, minor: UInt32 = 0, patch: UInt32 = 0
    LLVMGetVersion(&major, &minor, &patch)
    let header = [String(decoding: magic, as: UTF8.self), "llvm \(major).\(minor).\(patch)", target.triple, target.cpu, target.features, pipeline]
    h.update(Array(header.joined(separator: "\n").utf8) + [0])
    module.withBitcode { h.update($0) }
    return h.finalize().map { String(format: "%02x", $0) }.joined()
  }

  func path(_ key: String) -> URL { directory.appendingPathComponent(key + ".o") }

  /// The object code stored under `key`, or nil (absent, or not a whole, intact entry for this key).
  public func load(_ key: String) -> ObjectCode? {
    guard refusal == nil, let file = try? RegularFile(path(key).path, noFollow: true), file.size <= Self.maxEntryBytes,
          let bytes = try? file.readAll() else { return nil }
    let keyBytes = Array(key.utf8)
    let headerCount = Self.magic.count + keyBytes.count + 1 + 8 + 32
    guard bytes.count >= headerCount, Array(bytes[..<Self.magic.count]) == Self.magic,
          Array(bytes[Self.magic.count..<(Self.magic.count + keyBytes.count)]) == keyBytes, bytes[Self.magic.count + keyBytes.count] == 0
    else { return nil }
    let lengthAt = Self.magic.count + keyBytes.count + 1
    let length = (0..<8).reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[lengthAt + $1]) }
    let payload = bytes[headerCount...]
    guard length == UInt64(payload.count) else { return nil }
    var h = SHA256()
    h.update(payload)
    guard h.finalize() == Array(bytes[(lengthAt + 8)..<headerCount]) else { return nil }
    // A hit counts as a use: the least recently used entries are the ones `prune` drops.
    try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: path(key).path)
    return ObjectCode(copying: payload)
  }

  /// Stores `object` under `key` (best effort: a cache that cannot be written is skipped).
  public func store(_ key: String, _ object: ObjectCode) {
    let payload = object.bytes
    var h = SHA256()
    h.update(payload)
    let length = UInt64(payload.count)
    guard refusal == nil else { return }
    let entry = Self.magic + Array(key.utf8) + [0] + (0..<8).map { UInt8(truncatingIfNeeded: length >> (56 - 8 * $0)) } + h.finalize() + payload
    do {
      try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
      let temporary = directory.appendingPathComponent(".\(key).\(getpid()).\(UInt64.random(in: 0...UInt64.max)).tmp")
      try Data(entry).write(to: temporary)
      if rename(temporary.path, path(key).path) != 0 { try? FileManager.default.removeItem(at: temporary) }
    } catch {
      return
    }
    prune()
  }

  /// Drops the least recently used entries beyond `maxEntries`, and temporary files of writers that died.
  func prune() {
    let fm = FileManager.default
    guard let names = try? fm.contentsOfDirectory(atPath: directory.path) else { return }
    let stale = Date().addingTimeInterval(-3600)
    var entries: [(URL, Date)] = []
    for name in names {
      let url = directory.appendingPathComponent(name)
      let date = (try? fm.attributesOfItem(atPath: url.path)[.modificationDate] as? Date) ?? .distantPast
      if name.hasSuffix(".o") { entries.append((url, date)) } else if name.hasSuffix(".tmp"), date < stale { try? fm.removeItem(at: url) }
    }
    guard entries.count > maxEntries else { return }
    for (url, _) in entries.sorted(by: { $0.1 < $1.1 }).prefix(entries.count - maxEntries) { try? fm.removeItem(at: url) }
  }
}
