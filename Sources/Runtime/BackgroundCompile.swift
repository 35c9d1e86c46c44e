import Dispatch
import Foundation
import Lowering

/// Programs compiled on a thread of their own while the caller goes on: a training run's evaluation
/// programs, which the first step does not need, compile while the first steps run. The code is the code a
/// synchronous compile makes (the same programs, the same compiler settings); only when it is made moves.
/// The compiler copy that made it is kept here, so the entry points live as long as this object.
final class BackgroundCompile<C: ProgramCompiler>: @unchecked Sendable {
  /// LLVM's optimiser recurses over deep expressions; a thread's default stack is too small for it.
  static var stackBytes: Int { 16 << 20 }
  /// The programs being compiled, in order.
  let programs: [Program]
  private let finished = DispatchSemaphore(value: 0)
  // Written once by the compiling thread before `finished` is signalled; read only after waiting on it.
  private var outcome: Result<(entries: [EntryPoint], compiler: C), Error>?
  private var wallSeconds = 0.0

  init(_ programs: [Program], compiler: C) {
    self.programs = programs
    let work = UncheckedSendable(value: (programs, compiler))
    let thread = Thread { [self] in
      let start = Date()
      var compiler = work.value.1
      outcome = Result { (try compiler.compile(work.value.0), compiler) }
      wallSeconds = Date().timeIntervalSince(start)
      finished.signal()
    }
    thread.stackSize = Self.stackBytes
    thread.start()
  }

  /// Blocks until the compile is done; then the entry points in the programs' order, or its error.
  func entries() throws -> [EntryPoint] {
    wait()
    return try outcome!.get().entries
  }

  /// Blocks until the compile is done.
  func wait() {
    finished.wait()
    finished.signal()
  }

  /// The compile's wall time, once it is done (nil before).
  var seconds: Double? {
    guard finished.wait(timeout: .now()) == .success else { return nil }
    finished.signal()
    return wallSeconds
  }
}
