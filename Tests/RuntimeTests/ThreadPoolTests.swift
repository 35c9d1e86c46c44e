import Foundation
import Runtime
import Testing

/// The pool that runs compiled `parallel` statements: every index exactly once per job, whatever the
/// number of workers, job after job; and it shuts down cleanly.
@Suite struct ThreadPoolTests {
  /// Adds one to slot `index` of the Int buffer `context` (each index its own slot, so no two threads share one).
  static let count: ParallelTask = { context, index in
    context!.assumingMemoryBound(to: Int.self)[Int(index)] += 1
  }

  /// The pool's run function, called as compiled code calls it: through the pointer's first field.
  static func run(_ pool: ThreadPool, _ slots: UnsafeMutablePointer<Int>, _ n: Int) {
    pool.pointer.load(as: PoolRun.self)(pool.pointer, count, slots, Int64(n))
  }

  @Test(arguments: [0, 1, 3]) func everyIndexRunsOncePerJob(_ workers: Int) {
    let pool = ThreadPool(workers: workers)
    let slots = UnsafeMutablePointer<Int>.allocate(capacity: 17)
    slots.initialize(repeating: 0, count: 17)
    defer { slots.deallocate() }
    var expected = [Int](repeating: 0, count: 17)
    for job in 0..<3000 {
      let n = job % 18  // 0 ..< 17 iterations, none included
      Self.run(pool, slots, n)
      for i in 0..<n { expected[i] += 1 }
      if job % 500 == 0 { usleep(2000) }  // now and then the workers fall asleep between jobs
    }
    #expect(Array(UnsafeBufferPointer(start: slots, count: 17)) == expected)
  }

  @Test func poolsComeAndGo() {
    let slots = UnsafeMutablePointer<Int>.allocate(capacity: 4)
    slots.initialize(repeating: 0, count: 4)
    defer { slots.deallocate() }
    for _ in 0..<50 {
      let pool = ThreadPool(workers: 2)
      Self.run(pool, slots, 4)
    }
    #expect(Array(UnsafeBufferPointer(start: slots, count: 4)) == [50, 50, 50, 50])
  }

  /// The cores' round trip is a time, well under a millisecond where two processors pass a word back and forth; none
  /// with one processor.
  @Test func coreRoundTripIsMeasured() {
    let t = ThreadPool.coreRoundTrip()
    if ProcessInfo.processInfo.activeProcessorCount > 1 {
      #expect(t.map { $0 > 1 && $0 < 1_000_000 } == true, "\(String(describing: t))")
    } else {
      #expect(t == nil)
    }
  }
}
