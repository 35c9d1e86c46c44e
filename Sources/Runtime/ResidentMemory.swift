import Foundation

/// The process's peak resident memory in MB: the kernel's high-water mark of this program's address space
/// (`VmHWM` in /proc/self/status), or `getrusage`'s where there is no /proc. On Linux `ru_maxrss` also keeps
/// the peak of the process image `exec` replaced: started from a 1 GB Python process, every `cnnc bench` said at
/// least 1 GB (zoo-compare's ResNet-18 run said 687 MB where the run alone peaks at 254 MB).
public func peakResidentMegabytes() -> Double {
  if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
     let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
     let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) {
    return kilobytes / 1024
  }
  var usage = rusage()
  getrusage(RUSAGE_SELF.rawValue, &usage)
  // Kilobytes on Linux and the BSDs, bytes on Apple systems.
  #if canImport(Darwin)
  return Double(usage.ru_maxrss) / (1024 * 1024)
  #else
  return Double(usage.ru_maxrss) / 1024
  #endif
}
