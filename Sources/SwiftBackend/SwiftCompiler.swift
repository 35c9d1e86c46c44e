import FileSystem
import GraphIR
import Foundation
import Lowering

/// A failure to compile or load generated Swift.
public struct SwiftCompileError: UserFacingError {
  public var description: String
}

/// A dlopen-ed library, closed when the last reference goes (after the back end that calls into it).
final class LoadedLibrary {
  let handle: UnsafeMutableRawPointer
  init(_ handle: UnsafeMutableRawPointer) { self.handle = handle }
  deinit { dlclose(handle) }
}

/// Compiles rendered Swift with the toolchain's swiftc (`-Ounchecked`, `-target-cpu` of the target) into
/// a shared library cached by the source's hash (the source names the CPU), and loads it with dlopen.
/// swiftc takes a CPU name but no feature list: a target given with `--features` is refused.
///
/// The cache (`libraries/` in `cacheRoot`) is untrusted input: it must be a directory of this user's that no one
/// else can write, and a library is loaded only when its SHA-256 matches the digest written beside it after
/// swiftc finished, so a truncated or damaged library is compiled again instead of crashing the loader. A cache
/// that cannot be used costs the compile only: the library is then built in a private temporary directory.
public struct SwiftCompiler: ProgramCompiler {
  public let name = "swift"
  public let target: Target
  let cacheDirectory: String
  let source: String
  var libraries: [LoadedLibrary] = []
  /// Seconds spent in swiftc (zero when the cache had the library).
  public private(set) var compileSeconds = 0.0
  public private(set) var cacheHits = 0

  /// `source` names the graph file in the generated header.
  public init(source: String, target: Target, cacheDirectory: String? = nil) throws {
    try loadBLAS()
    guard target.origin == .host || !target.features.contains("+") else {
      throw SwiftCompileError(description: "the Swift back end takes --cpu but not --features (swiftc has no feature list); use --jit")
    }
    self.target = target
    self.source = source
    self.cacheDirectory = cacheDirectory ?? Path.join(cacheRoot(), "libraries")
  }

  /// The swiftc to use: `$SWIFTC`, else the first `swiftc` on PATH, else the one next to `swift`.
  static func swiftc() throws -> String {
    let env = ProcessInfo.processInfo.environment
    if let s = env["SWIFTC"], FileManager.default.isExecutableFile(atPath: s) { return s }
    for dir in (env["PATH"] ?? "/usr/bin").split(separator: ":") + ["/opt/swift/usr/bin"] {
      let p = "\(dir)/swiftc"
      if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    throw SwiftCompileError(description: "cannot find swiftc (set SWIFTC or put the Swift toolchain on PATH)")
  }

  /// swiftc's clang importer takes only CPU names that also tune, so the x86-64 microarchitecture levels
  /// become the first CPU of each level (the same instruction set: v2 = Nehalem, v3 = Haswell's AVX2, FMA
  /// and BMI, v4 = Skylake-AVX512's F/BW/CD/DQ/VL).
  static func swiftcCPU(_ cpu: String) -> String {
    ["x86-64-v2": "nehalem", "x86-64-v3": "haswell", "x86-64-v4": "skylake-avx512"][cpu] ?? cpu
  }

  /// FNV-1a of the source, as hex: the cache key.
  static func hash(_ s: String) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return String(h, radix: 16)
  }

  /// The Swift source of `programs`, as compiled: elementwise loops in vector form (swiftc does not
  /// widen them itself), then rendered.
  public static func source(of programs: [Program], from file: String) -> String {
    SwiftRenderer.render(programs.map(vectorizeElementwiseLoops), source: file)
  }

  /// The cache directory when it is usable (private, writable), else a new private temporary directory.
  func workingDirectory() throws -> (path: String, temporary: Bool) {
    do {
      if try preparePrivateDirectory(cacheDirectory) == nil, access(cacheDirectory, W_OK) == 0 { return (cacheDirectory, false) }
    } catch {}
    return (try makeTemporaryDirectory(prefix: "cnnc-swift"), true)
  }

  /// Whether `lib` is whole: a regular file (not a link) whose SHA-256 is the one recorded in `digestFile`.
  static func isIntact(_ lib: String, digestFile: String) -> Bool {
    guard let recorded = try? readRegularFile(digestFile, maxBytes: 64), let file = try? RegularFile(lib, noFollow: true),
          let bytes = try? file.readAll() else { return false }
    return hex(bytes) == String(decoding: recorded, as: UTF8.self)
  }

  /// The SHA-256 of `bytes` in hex.
  static func hex(_ bytes: [UInt8]) -> String {
    var h = SHA256()
    h.update(bytes)
    return h.finalize().map { String(format: "%02x", $0) }.joined()
  }

  public mutating func compile(_ programs: [Program]) throws -> [EntryPoint] {
    let text = Self.source(of: programs, from: source)
    let key = Self.hash(text)
    let (dir, temporary) = try workingDirectory()
    defer { if temporary { try? FileManager.default.removeItem(atPath: dir) } }
    let lib = Path.join(dir, "cnnc-\(key).so"), digest = lib + ".sha256"
    if !temporary, Self.isIntact(lib, digestFile: digest) {
      cacheHits += 1
    } else {
      unlink(lib)
      unlink(digest)
      let start = Date()
      let src = Path.join(dir, "cnnc-\(key).swift")
      try writeAtomically(Array(text.utf8), to: src)
      let tmp = "\(lib).tmp-\(getpid())"
      let p = Process()
      p.executableURL = URL(fileURLWithPath: try Self.swiftc())
      p.arguments = ["-Ounchecked", "-target-cpu", Self.swiftcCPU(target.cpu), "-emit-library", "-module-name", "cnnc_\(key)", "-o", tmp, src]
      let err = Pipe()
      p.standardError = err
      p.standardOutput = err
      try p.run()
      let output = err.fileHandleForReading.readDataToEndOfFile()
      p.waitUntilExit()
      guard p.terminationStatus == 0 else {
        try? FileManager.default.removeItem(atPath: tmp)
        // Its errors first (warnings about the generated code can fill the output before the first one).
        let text = String(decoding: output, as: UTF8.self)
        let errors = text.split(separator: "\n").filter { $0.contains("error:") }.prefix(10).map { String($0.prefix(300)) }
        throw SwiftCompileError(description: "swiftc failed on generated code (\(src)):\n" + (errors.isEmpty ? String(text.prefix(4000)) : errors.joined(separator: "\n")))
      }
      // The digest first, then the library renamed into place: a reader finds both whole or no library.
      do {
        try writeAtomically(Array(Self.hex(try readRegularFile(tmp, maxBytes: Int.max)).utf8), to: digest)
        try renameOrThrow(tmp, lib)
      } catch {
        unlink(tmp)
        throw SwiftCompileError(description: "cannot store the compiled library in \(dir): \(error)")
      }
      compileSeconds += Date().timeIntervalSince(start)
    }
    guard let h = dlopen(lib, RTLD_NOW | RTLD_LOCAL) else {
      throw SwiftCompileError(description: "cannot load \(lib): \(dlerror().map { String(cString: $0) } ?? "unknown error")")
    }
    libraries.append(LoadedLibrary(h))
    return try programs.map { p in
      guard let sym = dlsym(h, p.functions[0].name) else { throw SwiftCompileError(description: "\(lib) lacks \(p.functions[0].name)") }
      return unsafeBitCast(sym, to: EntryPoint.self)
    }
  }
}
