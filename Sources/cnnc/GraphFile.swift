import FileSystem
import ArgumentParser
import Foundation
import GraphIR
import LLVMBackend
import Lowering
import ONNX
import Passes
import Runtime
import SwiftBackend

/// A failure already reported to the user on stderr: the command exits with status 1.
let ReportedFailure = ExitCode.failure

/// Writes a message to stderr.
func printError(_ s: String) {
  fflush(nil)  // keep stdout's lines before the message when both go to one terminal or file
  FileHandle.standardError.write(Data(s.utf8))
}

/// Diagnostics found in a file, shown (by `renderUserFacing`) with the source lines they point at.
struct FileDiagnostics: UserFacingError {
  let list: DiagnosticList
  let file: String
  let source: [UInt8]
  var description: String { list.render(file: file, source: source) }
}

/// Reads and parses a `.graph` file (or imports an `.onnx` model); a malformed one throws its diagnostics.
struct GraphFile {
  let path: String
  let source: [UInt8]
  let graph: Graph
  /// The weights an imported model carries (its ONNX initializers), under the graph's `state_dict` names.
  var initializers: SafeTensors?

  /// Reads a model file; `anyDialect` also accepts the compiler's backward and fused dialects (IR dumps).
  /// An `.onnx` file is translated (`cnnc import`), and its `source` is the translated `.graph` text.
  /// The largest graph file read (16 MiB).
  static let maxFileBytes = 16 << 20

  init(path: String, anyDialect: Bool = false, verbose: Bool = false) throws {
    if path.lowercased().hasSuffix(".onnx") {
      self = try GraphFile(onnx: path, verbose: verbose)
      return
    }
    self.path = path
    // A graph is a few hundred bytes; refusing huge files keeps the compiler's memory bounded.
    let data: [UInt8]
    do { data = try readRegularFile(path, maxBytes: Self.maxFileBytes) } catch { throw FileError("cannot read graph file: \(error)") }
    source = data
    let stem = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
    let name = stem.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") } && !(stem.first?.isNumber ?? true) ? stem : "graph"
    do {
      graph = try Parser.parse(source, defaultName: name)
      if !anyDialect { try Verifier.requireForwardDialect(graph) }
      try Verifier.verify(graph)
    } catch {
      throw FileDiagnostics(list: error, file: path, source: source)
    }
  }

  /// An ONNX model read as a graph, with its initializers; notes about the translation go to stderr (the renamed
  /// layers one by one with `verbose`, else counted in one line).
  init(onnx path: String, verbose: Bool = false) throws {
    let imported = try reportingErrors { try ONNXImport.read(path) }
    self.path = path + " (as .graph)"
    source = Array(imported.text.utf8)
    graph = imported.graph
    initializers = SafeTensors(tensors: imported.tensors)
    for note in imported.notes + (verbose ? imported.renames : []) { printError("note: \(path): \(note)\n") }
    if !verbose, !imported.renames.isEmpty {
      printError("note: \(path): \(imported.renames.count) layer names were made .graph identifiers (--verbose lists them)\n")
    }
  }

  /// The weights to start from: the checkpoint at `weights`, else the model's own initializers.
  func weights(_ weights: String?) throws -> (SafeTensors, path: String) {
    if let weights { return (try SafeTensors.read(from: weights), weights) }
    guard let initializers else { throw CheckpointError("--weights is required: \(path) carries no weights (an .onnx model does)") }
    return (initializers, path)
  }

  /// A graph compiled into the binary (so `cnnc train --jit` works from any directory).
  init(builtin name: String, text: String) throws {
    path = "<built-in \(name)>"
    source = Array(text.utf8)
    do {
      graph = try Parser.parse(source, defaultName: "simplecnn")
    } catch {
      throw FileDiagnostics(list: error, file: path, source: source)
    }
  }

  /// Runs a pass; its diagnostics are shown against this file.
  func run<T>(_ pass: () throws(DiagnosticList) -> T) throws -> T {
    do {
      return try pass()
    } catch {
      throw FileDiagnostics(list: error, file: path, source: source)
    }
  }
}

/// Flushes stdout so per-epoch lines appear at once when piped.
func flushStandardOutput() {
  try? FileHandle.standardOutput.synchronize()
  fflush(nil)
}

/// The programs `cnnc compile` emits for a graph: the training step (Adam) and inference, at one batch size.
func lowerForEmission(_ g: Graph, batch: Int, target: Target) throws(DiagnosticList) -> [Program] {
  var programs: [Program] = []
  // A graph with int8 convs has no training step (`Pipeline` refuses it).
  if g.minimize != nil, g.int8Nodes.isEmpty { programs.append(try lower(g, batch: batch, mode: .train(OptimizerSpec(kind: .adam)), target: target)) }
  programs.append(try lower(g, batch: batch, mode: .infer, target: target))
  return programs
}

/// Makes stdout line-buffered, so progress lines appear at once even through a pipe.
func lineBufferStandardOutput() {
  // stdout is a C global; this runs once, on the main thread, before any other output.
  let symbol = dlsym(nil, "stdout")  // RTLD_DEFAULT is NULL on glibc
  guard let file = symbol?.assumingMemoryBound(to: UnsafeMutablePointer<FILE>?.self).pointee else { return }
  setvbuf(file, nil, _IOLBF, 0)
}

/// The message for an error a user can cause (every `UserFacingError`, and Foundation's file-system errors
/// with their path and the system's reason instead of the raw error dump), or nil for anything else.
/// The one place errors become text, for every command.
func renderUserFacing(_ error: Error) -> String? {
  switch error {
  case let e as FileDiagnostics:
    return e.description
  case let e as DiagnosticList:
    return e.render(file: "<graph>", source: [])
  case let e as any UserFacingError:
    return "error: \(e)\n"
  case let e as CocoaError:
    let path = (e.userInfo[NSFilePathErrorKey] as? String) ?? e.filePath ?? "a file"
    let reason = (e.underlying as? POSIXError).map { String(cString: strerror($0.code.rawValue)) } ?? e.localizedDescription
    return "error: \(path): \(reason)\n"
  default:
    return nil
  }
}

/// Runs a command body, turning the errors a user can cause into their message and exit status 1;
/// anything else (the argument parser's own errors, exit codes) propagates.
func reportingErrors<T>(_ body: () throws -> T) throws -> T {
  do {
    return try body()
  } catch {
    guard let message = renderUserFacing(error) else { throw error }
    printError(message)
    throw ReportedFailure
  }
}
