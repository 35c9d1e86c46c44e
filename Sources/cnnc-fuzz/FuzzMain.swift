import FuzzTargets
import Foundation

/// The target named by `CNNC_FUZZ_TARGET` (graph, safetensors, idx, png); `graph` when unset.
func selectedTarget() -> FuzzTarget {
  let name = ProcessInfo.processInfo.environment["CNNC_FUZZ_TARGET"] ?? "graph"
  guard let t = FuzzTarget(rawValue: name) else {
    FileHandle.standardError.write(Data("cnnc-fuzz: unknown target '\(name)'; targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
    exit(2)
  }
  return t
}

#if FUZZING
  /// Read once: libFuzzer calls the entry point millions of times.
  let target = selectedTarget()

  /// The libFuzzer entry point (built with -sanitize=fuzzer by `make fuzz`).
  @_cdecl("LLVMFuzzerTestOneInput")
  public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    target.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
  }

  typealias FuzzerCallback = @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
  typealias FuzzerDriver = @convention(c) (
    UnsafeMutablePointer<CInt>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>, FuzzerCallback
  ) -> CInt

  /// The package's entry point for this executable hands control to libFuzzer's driver.
  @_cdecl("cnnc_fuzz_main")
  public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    guard let driver = dlsym(nil, "LLVMFuzzerRunDriver") else { return 2 }
    var c = argc
    var v = argv
    return unsafeBitCast(driver, to: FuzzerDriver.self)(&c, &v, fuzzOneInput)
  }
#else
  /// Without the fuzzer: replays files (e.g. Fuzz/regressions/TARGET) through the selected target.
  @main
  struct Replay {
    static func main() throws {
      let target = selectedTarget()
      var count = 0
      for arg in CommandLine.arguments.dropFirst() {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: arg, isDirectory: &isDir) else { continue }
        let files = isDir.boolValue ? try FileManager.default.contentsOfDirectory(atPath: arg).sorted().map { "\(arg)/\($0)" } : [arg]
        for f in files {
          target.run([UInt8](try Data(contentsOf: URL(fileURLWithPath: f))))
          count += 1
        }
      }
      print("replayed \(count) \(target.rawValue) inputs")
    }
  }
#endif
