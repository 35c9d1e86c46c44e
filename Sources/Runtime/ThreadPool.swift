import CSpin
import Foundation
import Synchronization

/// A task of a compiled `parallel` statement: `task(context, index)`.
public typealias ParallelTask = @convention(c) (UnsafeMutableRawPointer?, Int64) -> Void
/// A pool's run function, as compiled code calls it through the pool's first field: `run(pool, task, context, count)`.
public typealias PoolRun = @convention(c) (UnsafeMutableRawPointer?, ParallelTask?, UnsafeMutableRawPointer?, Int64) -> Void

/// Persistent worker threads that run compiled code's `parallel` statements: an entry point given
/// `pool` hands each such statement's iterations to `run`, which the calling thread and the workers share.
/// Which thread runs an iteration changes nothing in it (the lowering fixed the partition), so results are
/// the same bits with any number of workers, or with no pool at all.
///
/// A worker that finishes a job spins for `spinChecks` looks at the job word before it sleeps: the serial
/// code between two parallel statements of one call, or between two calls of a stream of single-image
/// inferences, is shorter than waking a sleeping thread, while an idle pool soon gives its core back. One
/// caller at a time: a pool belongs to one back end, whose inference calls run one after another.
public final class ThreadPool {
  /// What compiled code reads through its `pool` argument: the run function first (`EntryABI.poolDeclaration`).
  struct View {
    var run: PoolRun
    var state: Unmanaged<State>
  }

  /// Looks at the job word a worker makes before it sleeps, each after a spin-wait hint (`cnnc_spin_pause`):
  /// about 0.3 ms on Zen 5. On a 2-vCPU Zen 5 guest, 200 looks (the worker mostly asleep when a call's
  /// first parallel statement comes) gave a batch-1 inference of SimpleCNN 95 us, 2,000 and 20,000 gave 63-78 us.
  static let spinChecks = 20_000

  let state: State
  private let view: UnsafeMutablePointer<View>
  private let exited: DispatchGroup

  /// The most threads a run may ask for (`--threads`): far more than any machine cnnc runs on has cores, and few
  /// enough that a mistyped count cannot exhaust the process's threads or its memory for their stacks.
  public static let maxThreads = 256

  /// A pool of `workers` threads besides the caller's.
  public init(workers: Int) {
    state = State()
    exited = DispatchGroup()
    view = .allocate(capacity: 1)
    view.initialize(to: View(run: { view, task, context, count in
      view.unsafelyUnwrapped.assumingMemoryBound(to: View.self).pointee.state.takeUnretainedValue().run(task!, context, Int(count))
    }, state: .passUnretained(state)))
    for _ in 0..<max(0, workers) {
      let (state, exited) = (state, exited)
      exited.enter()
      let thread = Thread {
        state.work()
        exited.leave()
      }
      thread.start()
    }
  }

  /// Exchanges in one measurement of `coreRoundTrip`, and the measurements whose median it reports.
  static let roundTripExchanges = 20_000, roundTripMeasurements = 3
  /// How long one measurement of `coreRoundTrip` may take: two threads that share a CPU pass the word only when the
  /// scheduler switches them.
  static let roundTripLimit = 0.05

  /// The median time in nanoseconds for this thread and another to pass a word there and back (each spinning on
  /// it): what a parallel statement's handoff costs between two cores. On the 2-vCPU guests this project runs on
  /// it is about 55-100 ns, or 320-380 ns while the host runs the two vCPUs on distant cores, when batch-1
  /// inference gains nothing from a second thread (docs/performance-log.md). nil with one processor.
  public static func coreRoundTrip() -> Double? {
    guard ProcessInfo.processInfo.activeProcessorCount > 1 else { return nil }
    let times = (0..<roundTripMeasurements).compactMap { _ in measureRoundTrip() }.sorted()
    return times.isEmpty ? nil : times[times.count / 2]
  }

  /// One measurement of `coreRoundTrip`: nil when it ran past `roundTripLimit`.
  private static func measureRoundTrip() -> Double? {
    final class Shared: @unchecked Sendable { let word = Atomic<Int>(0), stop = Atomic<Bool>(false) }
    let shared = Shared(), done = DispatchSemaphore(value: 0), n = roundTripExchanges
    Thread {
      for i in 0..<n {
        while shared.word.load(ordering: .acquiring) != 2 * i + 1 { if shared.stop.load(ordering: .relaxed) { done.signal(); return } }
        shared.word.store(2 * i + 2, ordering: .releasing)
      }
      done.signal()
    }.start()
    let start = DispatchTime.now().uptimeNanoseconds, limit = UInt64(roundTripLimit * 1e9)
    var completed = 0
    exchange: for i in 0..<n {
      shared.word.store(2 * i + 1, ordering: .releasing)
      var spins = 0
      while shared.word.load(ordering: .acquiring) != 2 * i + 2 {
        spins += 1
        if spins & 0xfff == 0, DispatchTime.now().uptimeNanoseconds - start > limit { break exchange }
      }
      completed += 1
    }
    shared.stop.store(true, ordering: .relaxed)
    done.wait()
    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start)
    return completed == n ? elapsed / Double(n) : nil
  }

  /// The pointer compiled entry points take as `pool`.
  public var pointer: UnsafeMutableRawPointer { UnsafeMutableRawPointer(view) }

  deinit {
    state.stop()
    exited.wait()
    view.deallocate()
  }

  /// The shared state of the caller and the workers. The job word holds the job's generation (high 32
  /// bits), its iteration count and the next unclaimed index (16 bits each): claiming an index is one
  /// compare-and-swap of the word, which fails once the generation moved on, so a worker that wakes late
  /// never runs an index of a job already finished, nor reads another job's count.
  final class State: @unchecked Sendable {
    static let indexBits: UInt64 = 16, generationShift: UInt64 = 32
    static let indexMask: UInt64 = (1 << indexBits) - 1
    let word = Atomic<UInt64>(0)
    /// Iterations of the current job finished.
    let finished = Atomic<Int>(0)
    let sleepers = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    // The job; written by the caller before it publishes the word, read by whoever claimed an index of it.
    var task: ParallelTask?
    var context: UnsafeMutableRawPointer?
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
      pthread_mutex_init(mutex, nil)
      pthread_cond_init(wake, nil)
    }

    deinit {
      pthread_cond_destroy(wake)
      pthread_mutex_destroy(mutex)
      mutex.deallocate()
      wake.deallocate()
    }

    /// Runs task(context, i) for every i in 0..<count on this thread and any awake workers; returns when all are done.
    func run(_ task: ParallelTask, _ context: UnsafeMutableRawPointer?, _ count: Int) {
      precondition(UInt64(count) <= Self.indexMask, "a parallel statement of \(count) iterations")
      guard count > 1 else {
        if count == 1 { task(context, 0) }
        return
      }
      self.task = task
      self.context = context
      finished.store(0, ordering: .relaxed)
      let generation = (word.load(ordering: .relaxed) >> Self.generationShift) &+ 1
      word.store(generation << Self.generationShift | UInt64(count) << Self.indexBits, ordering: .sequentiallyConsistent)
      if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
      }
      claim(generation)
      // Waiting for the workers' last iterations, with the hint: a plain spin would slow them (see `CSpin`).
      while finished.load(ordering: .acquiring) < count { cnnc_spin_pause() }
    }

    /// Runs indices of job `generation` until none is left to claim.
    private func claim(_ generation: UInt64) {
      var current = word.load(ordering: .acquiring)
      while current >> Self.generationShift == generation, current & Self.indexMask < (current >> Self.indexBits) & Self.indexMask {
        let (exchanged, original) = word.compareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
        if exchanged {
          task!(context, Int64(current & Self.indexMask))
          finished.add(1, ordering: .releasing)
          current = current + 1
        } else {
          current = original
        }
      }
    }

    /// A worker's life: wait for a job (spinning, then sleeping), help with it, until `stop`.
    func work() {
      var seen = word.load(ordering: .acquiring) >> Self.generationShift
      while true {
        var spins = 0
        while word.load(ordering: .acquiring) >> Self.generationShift == seen, !stopping.load(ordering: .relaxed) {
          spins += 1
          guard spins > ThreadPool.spinChecks else {
            cnnc_spin_pause()
            continue
          }
          pthread_mutex_lock(mutex)
          sleepers.add(1, ordering: .sequentiallyConsistent)
          while word.load(ordering: .sequentiallyConsistent) >> Self.generationShift == seen, !stopping.load(ordering: .relaxed) {
            pthread_cond_wait(wake, mutex)
          }
          sleepers.subtract(1, ordering: .relaxed)
          pthread_mutex_unlock(mutex)
        }
        if stopping.load(ordering: .relaxed) { return }
        seen = word.load(ordering: .acquiring) >> Self.generationShift
        claim(seen)
      }
    }

    /// Wakes every worker to exit.
    func stop() {
      pthread_mutex_lock(mutex)
      stopping.store(true, ordering: .sequentiallyConsistent)
      pthread_cond_broadcast(wake)
      pthread_mutex_unlock(mutex)
    }
  }
}
