import Foundation

/// Prepares an epoch's batches on a thread of its own, up to `depth` ahead of the step that takes them, so that
/// reading and transforming photos overlaps the step before. Batches come out in step order and are exactly what
/// the step would have made itself (a batch depends on its step number alone), so a run is the same bytes with
/// the queue or without it.
public final class BatchQueue {
  /// Batches prepared ahead: one waiting while the next is read keeps the step fed when reading is faster than
  /// the step; more would only hold more memory.
  public static let depth = 2

  /// What the preparing thread and the taker share, under `lock`.
  private final class State: @unchecked Sendable {
    let lock = NSCondition()
    var ready: [Int: Result<[Float], any Error>] = [:]
    var stopped = false
    let finished = DispatchSemaphore(value: 0)
  }
  private let state = State()

  /// Starts preparing the batches of `steps` in order with `prepare` (which may throw: the error comes out of
  /// `take` for that step, and nothing after it is prepared).
  public init(steps: Range<Int>, depth: Int = BatchQueue.depth, prepare: @escaping @Sendable (Int) throws -> [Float]) {
    let state = self.state
    Thread.detachNewThread {
      defer { state.finished.signal() }
      for s in steps {
        state.lock.lock()
        while !state.stopped && state.ready.count >= depth { state.lock.wait() }
        let stopped = state.stopped
        state.lock.unlock()
        if stopped { return }
        let batch = Result { try prepare(s) }
        state.lock.lock()
        state.ready[s] = batch
        state.lock.broadcast()
        state.lock.unlock()
        if case .failure = batch { return }
      }
    }
  }

  /// Step `s`'s batch, once it is ready (steps are taken in the order they were given).
  public func take(_ s: Int) throws -> [Float] {
    state.lock.lock()
    defer { state.lock.unlock() }
    while state.ready[s] == nil { state.lock.wait() }
    let batch = state.ready.removeValue(forKey: s)!
    state.lock.broadcast()
    return try batch.get()
  }

  /// Stops the preparing thread (after the batch it is reading) and waits for it: nothing outlives the epoch.
  deinit {
    state.lock.lock()
    state.stopped = true
    state.lock.broadcast()
    state.lock.unlock()
    state.finished.wait()
  }
}
