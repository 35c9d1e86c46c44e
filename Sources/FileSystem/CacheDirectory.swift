import Foundation

/// Where cnnc keeps what it compiled for later runs (the Swift back end's libraries, the JIT's object code):
/// `$CNNC_CACHE`, else `$XDG_CACHE_HOME/cnnc`, else `~/.cache/cnnc`.
public func cacheRoot(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
  if let d = environment["CNNC_CACHE"], !d.isEmpty { return d }
  let base = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory() + "/.cache"
  return base + "/cnnc"
}
