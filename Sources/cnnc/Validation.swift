import ArgumentParser
import Runtime

/// Refuses a `--threads` outside 1...`ThreadPool.maxThreads` (a count past it would start that many threads).
func validateThreads(_ threads: Int?) throws {
  if let threads, !(1...ThreadPool.maxThreads).contains(threads) {
    throw ValidationError("--threads must be from 1 to \(ThreadPool.maxThreads), got \(threads)")
  }
}
