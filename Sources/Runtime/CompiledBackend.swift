import Foundation
import GraphIR
import Lowering

/// The C signature of every compiled entry point:
/// `void f(params, grads, m, v, arena, images, labels, lr, step, seed)`.
public typealias EntryPoint = @convention(c) (
  UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?,
  UnsafeMutablePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Int32>?, Float, Int64, Int64
) -> Void

/// Turns lowered programs into callable entry points (the LLVM JIT, or compiled Swift source).
public protocol ProgramCompiler {
  /// Compiles the programs together; returns one entry point per program, in order.
  mutating func compile(_ programs: [Program]) throws -> [EntryPoint]
}

/// Owned, 64-byte-aligned float storage, zeroed; freed in `deinit`.
final class FloatBuffer {
  let pointer: UnsafeMutablePointer<Float>
  let count: Int
  init(_ count: Int) {
    self.count = max(count, 1)
    let raw = UnsafeMutableRawPointer.allocate(byteCount: self.count * 4, alignment: 64)
    raw.initializeMemory(as: Float.self, repeating: 0, count: self.count)
    pointer = raw.assumingMemoryBound(to: Float.self)
  }
  deinit { pointer.deallocate() }
}

/// A back end that runs compiled programs: the train step at the training batch, and inference
/// programs compiled on first use for each batch size. Parameters, gradients and optimiser state
/// live in flat buffers laid out as the programs expect; the arena is allocated once per program.
public final class CompiledBackend<C: ProgramCompiler>: Backend {
  public let name: String
  let graph: Graph
  let optimizerSpec: OptimizerSpec
  public private(set) var compiler: C
  let train: Program
  let trainEntry: EntryPoint
  var inference: [Int: (Program, EntryPoint)] = [:]
  let params: FloatBuffer, grads: FloatBuffer, m: FloatBuffer, v: FloatBuffer
  var arena: FloatBuffer
  var optimizerKind: Optimizer.Kind
  var stepsTaken = 0
  /// Time spent compiling (lowering plus code generation), reported by the CLI.
  public private(set) var compileSeconds: Double = 0

  public init(name: String, graph: Graph, batch: Int, optimizer: Optimizer, compiler: C, inferenceBatches: [Int] = [], fuse: Bool = true) throws {
    self.name = name
    self.graph = graph
    self.compiler = compiler
    optimizerKind = optimizer.kind
    optimizerSpec = OptimizerSpec(kind: optimizer.kind == .adam ? .adam : .sgd, momentum: optimizer.momentum, weightDecay: optimizer.weightDecay)
    let start = Date()
    var programs = [try lower(graph, batch: batch, mode: .train(optimizerSpec), fuse: fuse)]
    for b in inferenceBatches { programs.append(try lower(graph, batch: b, mode: .infer)) }
    let entries = try self.compiler.compile(programs)
    compileSeconds = Date().timeIntervalSince(start)
    train = programs[0]
    trainEntry = entries[0]
    for (p, e) in zip(programs.dropFirst(), entries.dropFirst()) { inference[p.batch] = (p, e) }
    params = FloatBuffer(train.parameterFloats)
    grads = FloatBuffer(train.parameterFloats)
    m = FloatBuffer(train.parameterFloats)
    v = FloatBuffer(train.parameterFloats)
    arena = FloatBuffer(programs.map(\.arenaFloats).max() ?? 16)
  }

  public func load(_ parameters: Parameters, _ optimizer: Optimizer) throws {
    for p in train.parameters {
      guard let values = parameters.values[p.name], values.count == p.shape.reduce(1, *) else {
        throw CheckpointError("parameter '\(p.name)' is missing or has the wrong size")
      }
      values.withUnsafeBufferPointer { params.pointer.advanced(by: p.offset).update(from: $0.baseAddress!, count: $0.count) }
      for (buffer, key) in [(m, optimizer.kind == .adam ? "m" : "momentum"), (v, "v")] {
        let state = optimizer.state["\(key).\(p.name)"] ?? [Float](repeating: 0, count: values.count)
        state.withUnsafeBufferPointer { buffer.pointer.advanced(by: p.offset).update(from: $0.baseAddress!, count: min($0.count, values.count)) }
      }
    }
    stepsTaken = optimizer.step
  }

  public func parameters() -> Parameters {
    var values: [String: [Float]] = [:], shapes: [String: [Int]] = [:]
    for p in train.parameters {
      let n = p.shape.reduce(1, *)
      values[p.name] = Array(UnsafeBufferPointer(start: params.pointer.advanced(by: p.offset), count: n))
      shapes[p.name] = p.shape
    }
    return Parameters(names: train.parameters.map(\.name), shapes: shapes, values: values)
  }

  /// The gradients the last train step computed, by parameter name.
  public func gradients() -> [String: [Float]] {
    Dictionary(uniqueKeysWithValues: train.parameters.map { p in
      (p.name, Array(UnsafeBufferPointer(start: grads.pointer.advanced(by: p.offset), count: p.shape.reduce(1, *))))
    })
  }

  public func optimizerState() -> [String: [Float]] {
    guard stepsTaken > 0 else { return [:] }
    var state: [String: [Float]] = [:]
    for p in train.parameters {
      let n = p.shape.reduce(1, *)
      func slice(_ b: FloatBuffer) -> [Float] { Array(UnsafeBufferPointer(start: b.pointer.advanced(by: p.offset), count: n)) }
      switch optimizerKind {
      case .adam:
        state["m.\(p.name)"] = slice(m)
        state["v.\(p.name)"] = slice(v)
      case .sgd:
        if optimizerSpec.momentum != 0 { state["momentum.\(p.name)"] = slice(m) }
      }
    }
    return state
  }

  public func trainStep(images: [Float], labels: [Int32], seed: UInt64, step: Int, learningRate: Float) throws -> (loss: Float, logits: [Float]) {
    guard images.count == train.imageFloats, labels.count == train.batch else {
      throw DataError("the compiled train step takes a batch of \(train.batch); got \(labels.count)")
    }
    images.withUnsafeBufferPointer { img in
      labels.withUnsafeBufferPointer { lab in
        trainEntry(params.pointer, grads.pointer, m.pointer, v.pointer, arena.pointer, img.baseAddress, lab.baseAddress,
                   learningRate, Int64(step), Int64(bitPattern: seed))
      }
    }
    stepsTaken = step
    let loss = arena.pointer[train.loss!.offset]
    let logits = Array(UnsafeBufferPointer(start: arena.pointer.advanced(by: train.output.offset), count: train.output.count))
    return (loss, logits)
  }

  public func infer(images: [Float], count: Int) throws -> [Float] {
    if inference[count] == nil {
      let start = Date()
      let p = try lower(graph, batch: count, mode: .infer)
      let entry = try compiler.compile([p])[0]
      compileSeconds += Date().timeIntervalSince(start)
      inference[count] = (p, entry)
      if p.arenaFloats > arena.count { arena = FloatBuffer(p.arenaFloats) }
    }
    let (p, entry) = inference[count]!
    images.withUnsafeBufferPointer { img in
      entry(params.pointer, nil, nil, nil, arena.pointer, img.baseAddress, nil, 0, 0, 0)
    }
    let base = p.output.base == .images ? UnsafeMutablePointer(mutating: images) : arena.pointer
    return Array(UnsafeBufferPointer(start: base.advanced(by: p.output.offset), count: p.output.count))
  }
}
