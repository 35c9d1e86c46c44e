import CLLVM
import Lowering

extension Module {
  /// Writes the (optimised) module as a native object file for the host.
  public func emitObject(_ tm: TargetMachine, to path: String) throws {
    var err: UnsafeMutablePointer<CChar>?
    let failed = path.withCString { p in LLVMTargetMachineEmitToFile(tm.ref, module, p, LLVMObjectFile, &err) }
    if failed != 0 { throw LLVMError.target(LLVMError.take(err)) }
  }
}

/// An owned buffer of native object code, freed in `deinit` unless a JIT took it over.
public final class ObjectCode {
  private var ref: LLVMMemoryBufferRef?
  init(_ ref: LLVMMemoryBufferRef) { self.ref = ref }
  /// A copy of `bytes` (object code read back from the cache).
  convenience init<C: Collection>(copying bytes: C) where C.Element == UInt8 {
    let array = Array(bytes)
    self.init(array.withUnsafeBufferPointer { b in
      b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { LLVMCreateMemoryBufferWithMemoryRangeCopy($0, b.count, "cached object")! }
    })
  }
  /// The object code's bytes (empty once a JIT took it over).
  var bytes: [UInt8] {
    guard let ref, let start = LLVMGetBufferStart(ref) else { return [] }
    return start.withMemoryRebound(to: UInt8.self, capacity: LLVMGetBufferSize(ref)) { Array(UnsafeBufferPointer(start: $0, count: LLVMGetBufferSize(ref))) }
  }
  /// Hands the buffer over; this object no longer owns it.
  func release() -> LLVMMemoryBufferRef? {
    defer { ref = nil }
    return ref
  }
  deinit { if let ref { LLVMDisposeMemoryBuffer(ref) } }
}

extension Module {
  /// The (optimised) module as object code in memory, for the JIT to link.
  public func objectCode(_ tm: TargetMachine) throws -> ObjectCode {
    var err: UnsafeMutablePointer<CChar>?
    var buffer: LLVMMemoryBufferRef?
    guard LLVMTargetMachineEmitToMemoryBuffer(tm.ref, module, LLVMObjectFile, &err, &buffer) == 0, let buffer else {
      throw LLVMError.target(LLVMError.take(err))
    }
    return ObjectCode(buffer)
  }

  /// The (optimised) module as assembly text for the target machine's CPU; nothing is executed.
  public func assembly(_ tm: TargetMachine) throws -> String {
    var err: UnsafeMutablePointer<CChar>?
    var buffer: LLVMMemoryBufferRef?
    guard LLVMTargetMachineEmitToMemoryBuffer(tm.ref, module, LLVMAssemblyFile, &err, &buffer) == 0, let buffer else {
      throw LLVMError.target(LLVMError.take(err))
    }
    defer { LLVMDisposeMemoryBuffer(buffer) }
    let bytes = UnsafeRawBufferPointer(start: LLVMGetBufferStart(buffer), count: LLVMGetBufferSize(buffer))
    return String(decoding: bytes, as: UTF8.self)
  }
}

/// The C header that goes with an emitted object: entry points plus the layout as `#define`s.
public enum CHeader {
  /// `normalization` is the (mean, std) of `cnnc train`'s default input normalisation, which the header states.
  public static func render(_ programs: [Program], source: String, normalization: (mean: Float, std: Float)) -> String {
    guard let first = programs.first else { return "" }
    let prefix = first.graphName.uppercased()
    var h = preamble(source, selfContained: programs.allSatisfy(\.target.selfContained), normalization: normalization) + """
      #ifndef CNNC_\(prefix)_H
      #define CNNC_\(prefix)_H
      #include <stdint.h>

      #ifndef CNNC_POOL
      #define CNNC_POOL
      \(EntryABI.poolDeclaration)
      #endif

      #define \(prefix)_PARAM_FLOATS \(first.parameterFloats)
      #define \(prefix)_CLASSES \(first.classes)

      """
    for p in first.parameters {
      let n = p.name.uppercased().replacingOccurrences(of: ".", with: "_")
      h += "#define \(prefix)_\(n)_OFFSET \(p.offset)  /* \(p.name) \(p.shape) */\n"
    }
    h += buffers(first, prefix: prefix)
    for p in programs {
      let f = p.functions[0].name
      let F = f.uppercased()
      h += "\n#define \(F)_BATCH \(p.batch)\n#define \(F)_ARENA_FLOATS \(p.arenaFloats)\n#define \(F)_PREPARED_FLOATS \(p.preparedFloats)\n"
        + "#define \(F)_IMAGE_FLOATS \(p.imageFloats)\n"
      h += "#define \(F)_OUTPUT_OFFSET \(p.output.offset)  /* [\(p.batch), \(p.classes)] logits in the arena */\n"
      if let l = p.loss { h += "#define \(F)_LOSS_OFFSET \(l.offset)  /* the scalar loss in the arena */\n" }
      for st in p.statistics {
        let n = st.node.uppercased()
        h += "#define \(F)_\(n)_STAT_ELEMENTS \(st.elements)\n"
        for (suffix, v) in zip(st.names.map { $0.uppercased() }, st.values) { h += "#define \(F)_\(n)_\(suffix)_STAT_OFFSET \(v.offset)  /* [\(v.count)] in the arena */\n" }
      }
      let arguments = EntryABI.lines(width: 100) { a in
        let type = switch a.kind {
        case .floats: "float *"
        case .readOnlyFloats: "const float *"
        case .labels: "const int32_t *"
        case .float: "float "
        case .int64: "int64_t "
        case .pool: "cnnc_pool *"
        }
        return type + a.name
      }
      h += "void \(f)(" + arguments.joined(separator: "\n    ") + ");\n"
    }
    return h + "\n#endif\n"
  }

  /// The header's opening comment: what a caller must know to link, fill and call the entry points.
  static func preamble(_ source: String, selfContained: Bool, normalization mnist: (mean: Float, std: Float)) -> String {
    let adam = OptimizerSpec(kind: .adam)
    let link = selfContained ? "and -lm: the code is self-contained (every GEMM a generated kernel) and needs only libc\n * and libm (memset, logf)"
                             : "-lopenblas and -lm (cblas_sgemm is the one BLAS call)"
    return """
      /* Generated by cnnc from \(source). Do not edit.
       * Link with the object file \(link); nothing of cnnc is needed at run time. The code is
       * position-independent (it links into a PIE, gcc's default). Entry points are not reentrant on one
       * arena: give each thread its own arena.
       *
       * Buffers are float arrays laid out as below: parameters (state_dict order), gradients and
       * optimiser state (m, v) share the parameter layout; the arena holds activations and scratch. Floats
       * need only their natural alignment (vector loads are unaligned), though 64-byte-aligned buffers run
       * faster. m and v must start at zero (calloc); the step writes the gradients and every arena value
       * before reading it, so neither needs zeroing.
       *
       * Parameters: PyTorch's initialisation is uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)] for every
       * weight and bias (fan_in = C*k*k for a conv, F for a dense layer); batchnorm weights start at 1,
       * biases at 0. A state_dict saved by cnnc or PyTorch can be copied in at the offsets below.
       *
       * Images: NCHW floats, normalised as in training; cnnc train's default is (x/255 - \(mnist.mean)) / \(mnist.std)
       * (MNIST's statistics; a checkpoint records its own in the cnnc.normalize.* metadata).
       *
       * The train step runs forward, backward and one Adam update with PyTorch's constants (beta1 \(adam.beta1),
       * beta2 \(adam.beta2), eps \(adam.epsilon), weight decay \(adam.weightDecay), bias correction by the 1-based
       * step); lr is its argument. Each call takes exactly BATCH images and labels: drop a short last batch
       * (as cnnc's trainer does) or pad it. Dropout is keyed by (seed, step). Inference reads params, arena,
       * prepared and images only (pass NULL for the rest) and its step: with 0 a call first derives what it
       * needs from the weights (such as transformed conv kernels) into prepared (PREPARED_FLOATS floats; NULL
       * where that is 0); pass 1 to skip that when an earlier call of the same entry point wrote this prepared
       * buffer from the same parameters. Calls with step 1 only read prepared: threads running one entry point
       * on arenas of their own may share it.
       *
       * pool: NULL runs everything on the calling thread. A cnnc_pool lets an inference call split its large
       * layers (by output channels or units, a fixed partition): its run function must call task(context, i)
       * once for every i in 0..<count, on any threads, and return when all are done. The results are the
       * same bits either way. */

      """
  }

  /// The buffers' part of the header (batch norm's running statistics); empty when there are none.
  static func buffers(_ first: Program, prefix: String) -> String {
    guard first.bufferFloats > 0 else { return "" }
    var h = """
      /* Buffers (batch norm's running statistics) follow the parameters in params, which must then hold
       * PARAM_FLOATS + BUFFER_FLOATS floats; they have no gradient or optimiser state. Inference reads them.
       * The train step leaves each batchnorm's batch mean and biased variance in the arena (STAT offsets
       * below, over STAT_ELEMENTS values per channel); the caller folds them in after the step, as PyTorch
       * does: running_mean = (1 - momentum) * running_mean + momentum * mean, and running_var likewise
       * with the unbiased variance var * n / (n - 1). */
      #define \(prefix)_BUFFER_FLOATS \(first.bufferFloats)

      """
    for b in first.buffers {
      let n = b.name.uppercased().replacingOccurrences(of: ".", with: "_")
      h += "#define \(prefix)_\(n)_OFFSET \(b.offset)  /* \(b.name) \(b.shape) */\n"
    }
    return h
  }
}
