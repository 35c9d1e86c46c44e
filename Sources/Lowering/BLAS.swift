import Foundation
import GraphIR

/// OpenBLAS, loaded into the global symbol namespace so that JIT-compiled and dlopen-ed code
/// resolves `cblas_sgemm` (the kernel IR's library GEMM, `Stmt.gemm`) from the process. Returns the kernel
/// OpenBLAS picked (e.g. "Haswell").
@discardableResult
public func loadBLAS() throws -> String {
  for name in ["libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"] {
    if let h = dlopen(name, RTLD_NOW | RTLD_GLOBAL) {
      typealias CoreName = @convention(c) () -> UnsafeMutablePointer<CChar>?
      guard let sym = dlsym(h, "openblas_get_corename") else { return "unknown" }
      return unsafeBitCast(sym, to: CoreName.self)().map { String(cString: $0) } ?? "unknown"
    }
  }
  throw LibraryError(description: "cannot load OpenBLAS (libopenblas.so.0); install libopenblas-dev")
}

/// A library the compiled programs call cannot be loaded.
public struct LibraryError: UserFacingError {
  public var description: String
}
