import FileSystem

/// An error a user can cause and fix (a malformed file, an impossible option, a target this machine cannot
/// run): its `description` is the whole message, without the `error:` prefix, and every command renders it
/// the same way (`cnnc`'s `renderUserFacing`). Errors that are not user-facing are compiler defects.
public protocol UserFacingError: Error, CustomStringConvertible {}

extension DiagnosticList: UserFacingError, CustomStringConvertible {
  /// The messages without their source lines (for a list that escaped the file it was found in).
  public var description: String {
    diagnostics.map { d in
      (d.range.line > 0 ? "line \(d.range.line):\(d.range.column): " : "") + d.message
        + d.notes.map { "\n  note: \($0.message)" }.joined()
    }.joined(separator: "\nerror: ")
  }
}

extension ShapeError: UserFacingError, CustomStringConvertible {
  public var description: String { message }
}

extension EvaluationError: UserFacingError {}

extension FileError: UserFacingError {}
