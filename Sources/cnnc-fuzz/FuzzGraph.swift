import Foundation
import GraphIR
import Passes

/// Runs the whole front end on one input: parse, shape inference at a few batch sizes, printing,
/// differentiation and fusion. Any input must end in diagnostics or success.
func exercise(_ bytes: [UInt8]) {
  do {
    let g = try Parser.parse(bytes, defaultName: "fuzz")
    _ = Printer.print(g)
    for batch in [1, 3] {
      let shapes = try inferShapes(g, batch: batch)
      _ = summarize(g, shapes)
      if g.minimize != nil {
        let grad = try differentiate(g)
        _ = fuseConvReLUPool(grad, shapes: try inferShapes(grad, batch: batch))
      }
    }
  } catch {
    _ = error.render(file: "fuzz.graph", source: bytes)
  }
}

#if FUZZING
  /// The libFuzzer entry point (built with -sanitize=fuzzer by `make fuzz`).
  @_cdecl("LLVMFuzzerTestOneInput")
  public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    exercise(Array(UnsafeBufferPointer(start: data, count: size)))
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
  /// Without the fuzzer: replays files (e.g. Fuzz/regressions) through the front end.
  @main
  struct Replay {
    static func main() throws {
      var count = 0
      for arg in CommandLine.arguments.dropFirst() {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: arg, isDirectory: &isDir) else { continue }
        let files = isDir.boolValue ? try FileManager.default.contentsOfDirectory(atPath: arg).sorted().map { "\(arg)/\($0)" } : [arg]
        for f in files {
          exercise([UInt8](try Data(contentsOf: URL(fileURLWithPath: f))))
          count += 1
        }
      }
      print("replayed \(count) inputs")
    }
  }
#endif
