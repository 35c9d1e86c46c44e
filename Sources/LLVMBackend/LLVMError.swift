import GraphIR
import CLLVM

/// An LLVM failure turned into a Swift error (never a crash on a user-reachable path).
public enum LLVMError: UserFacingError {
  case verification(String)
  case passes(String)
  case target(String)
  case jit(String)
  case symbolNotFound(String)

  public var description: String {
    switch self {
    case .verification(let m): "LLVM module verification failed: \(m)"
    case .passes(let m): "LLVM optimisation failed: \(m)"
    case .target(let m): "LLVM target error: \(m)"
    case .jit(let m): "LLVM JIT error: \(m)"
    case .symbolNotFound(let m): "JIT symbol not found: \(m)"
    }
  }

  /// Consumes an `LLVMErrorRef`, returning its message (or nil for success).
  static func message(_ err: LLVMErrorRef?) -> String? {
    guard let err else { return nil }
    guard let cmsg = LLVMGetErrorMessage(err) else { return "unknown error" }
    defer { LLVMDisposeErrorMessage(cmsg) }
    return String(cString: cmsg)
  }

  /// Reads and disposes an LLVM-allocated message string.
  static func take(_ msg: UnsafeMutablePointer<CChar>?) -> String {
    guard let msg else { return "" }
    defer { LLVMDisposeMessage(msg) }
    return String(cString: msg)
  }
}
