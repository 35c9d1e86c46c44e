/// The C signature of every compiled entry point (`EntryABI`, in this order and these types):
/// `void f(params, grads, m, v, arena, prepared, images, labels, lr, step, seed, pool)`.
public typealias EntryPoint = @convention(c) (
  UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?,
  UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Int32>?, Float, Int64, Int64,
  UnsafeMutableRawPointer?
) -> Void

/// Turns lowered programs into callable entry points (the LLVM JIT, or compiled Swift source): what a back end
/// provides and the runtime calls.
public protocol ProgramCompiler: SendableMetatype {
  /// The back end's short name (`jit`, `swift`).
  var name: String { get }
  /// The CPU the programs are lowered and compiled for.
  var target: Target { get }
  /// Compiles the programs together; returns one entry point per program, in order.
  mutating func compile(_ programs: [Program]) throws -> [EntryPoint]
}
