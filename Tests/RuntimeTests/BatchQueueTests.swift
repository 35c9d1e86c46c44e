import Foundation
import Runtime
import Testing

/// The queue that prepares a streamed set's batches ahead of the step: every batch in order, an error where it
/// happened, and no thread left behind when an epoch stops early.
@Suite struct BatchQueueTests {
  struct Broken: Error, Equatable { let step: Int }

  @Test func batchesComeInOrderAndAnErrorAtItsStep() throws {
    let queue = BatchQueue(steps: 3..<9) { s in
      if s == 7 { throw Broken(step: s) }
      return [Float(s), Float(s * s)]
    }
    for s in 3..<7 { #expect(try queue.take(s) == [Float(s), Float(s * s)]) }
    #expect(throws: Broken(step: 7)) { try queue.take(7) }
  }

  /// Dropped after one batch of many (an interrupted epoch), the queue stops its thread: at most `depth` batches
  /// beyond the one taken are ever prepared.
  @Test func aQueueDroppedEarlyStopsItsThread() throws {
    final class Count: @unchecked Sendable {
      let lock = NSLock()
      var prepared = 0
    }
    let count = Count()
    do {
      let queue = BatchQueue(steps: 0..<1000, depth: 2) { s in
        count.lock.withLock { count.prepared += 1 }
        return [Float(s)]
      }
      #expect(try queue.take(0) == [0])
    }
    #expect(count.lock.withLock { count.prepared } <= 4)
  }
}
