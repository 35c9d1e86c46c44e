import CNNCTestSupport
import FileSystem
import Foundation
import Runtime
import Testing

/// A structure-aware, seeded fuzzer of the command line: for every subcommand it starts from a valid invocation
/// on small fixtures, adds one to three arguments drawn from the command's own argument definitions (as
/// `cnnc --experimental-dump-help` lists them) with hostile values, runs the binary under a time limit, and
/// fails on a signal, a hang, an exit status other than 0, 1 or 64, or a raw dump on either stream.
///
/// `CNNC_FUZZ_RUNS` sets the number of runs (`make test`: `defaultRuns`; `make fuzz-cli`: thousands) and
/// `CNNC_FUZZ_SEED` the seed; a failure prints the seed, the run's index and its arguments, so it replays.
@Suite(.serialized) struct CLIFuzzTests {
  static let defaultRuns = 400
  /// Seconds a run may take before it counts as a hang: the slowest valid run here (a benchmark) takes a few.
  static let timeLimit = 120.0

  /// One argument of a subcommand, as the argument parser describes it.
  struct Argument {
    enum Kind: String { case positional, option, flag }
    var kind: Kind
    var name: String
  }

  /// The subcommands and their arguments, from the binary's own description of its command line.
  static func definitions(_ binary: String) throws -> [String: [Argument]] {
    let r = try FuzzRun.run(binary, ["--experimental-dump-help"], cwd: FileManager.default.currentDirectoryPath, timeLimit: timeLimit)
    let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    let command = try #require(json["command"] as? [String: Any])
    var out: [String: [Argument]] = [:]
    for sub in command["subcommands"] as? [[String: Any]] ?? [] {
      guard let name = sub["commandName"] as? String, name != "help" else { continue }
      out[name] = (sub["arguments"] as? [[String: Any]] ?? []).compactMap { a in
        guard let kind = (a["kind"] as? String).flatMap(Argument.Kind.init),
              let label = (a["names"] as? [[String: Any]])?.first(where: { $0["kind"] as? String == "long" })?["name"] as? String
                ?? (kind == .positional ? a["valueName"] as? String : nil) else { return nil }
        return ["help", "version"].contains(label) ? nil : Argument(kind: kind, name: label)
      }
    }
    return out
  }

  /// Options whose large values only make a valid run long (more epochs, more timed images): they get the hostile
  /// values that are not large counts, and the flags that switch to another long workload are left out.
  static let workOptions: Set = ["epochs", "singles", "save-every", "log-every", "scaling-layers"]
  static let longWorkloads: Set = ["compile-scaling"]

  /// The fixtures every run may name: small data, a trained checkpoint, a run directory, images and models.
  struct Scratch {
    let root: String
    var path: (String) -> String { { Path.join(root, $0) } }
    init(binary: String) throws {
      root = NSTemporaryDirectory() + "cnnc-cli-fuzz-\(UUID().uuidString)"
      let fm = FileManager.default
      try fm.createDirectory(atPath: root + "/small", withIntermediateDirectories: true)
      try fm.createDirectory(atPath: root + "/adir", withIntermediateDirectories: true)
      try SmallIDX.write(to: root + "/small", train: 192, test: 32)
      for (from, to) in [("Graphs/tiny.graph", "tiny.graph"), ("Tests/Fixtures/seven.png", "seven.png"), ("Tests/Fixtures/onnx/tiny.onnx", "tiny.onnx")] {
        try fm.copyItem(atPath: Fixtures.root.appendingPathComponent(from).path, toPath: root + "/" + to)
      }
      try Data("x".utf8).write(to: URL(fileURLWithPath: root + "/afile"))
      try Data(NPYArray(shape: [3, 1, 28, 28], values: (0..<(3 * 784)).map { Float($0 % 13) / 13 }).serialized())
        .write(to: URL(fileURLWithPath: root + "/x.npy"))
      mkfifo(root + "/fifo", 0o600)
      let r = try FuzzRun.run(binary, ["train", root + "/tiny.graph", "--jit", "--data", root + "/small", "--steps", "3", "--out", root + "/run0"],
                              cwd: root, timeLimit: CLIFuzzTests.timeLimit)
      try #require(r.status == 0, "the fixture run failed: \(r.stderr)")
    }
  }

  /// A valid invocation of each subcommand on the fixtures, cheap enough to run hundreds of times.
  static func base(_ command: String, _ s: Scratch) -> [String] {
    let tiny = s.path("tiny.graph"), weights = s.path("run0/weights.safetensors"), data = s.path("small")
    switch command {
    case "compile": return ["compile", tiny]
    case "dump-ir": return ["dump-ir", tiny, "--stage", "grad"]
    case "train": return ["train", tiny, "--jit", "--data", data, "--steps", "2", "--out", "run", "--no-report"]
    case "eval": return ["eval", tiny, "--weights", weights, "--data", data]
    case "predict": return ["predict", tiny, "--weights", weights, s.path("seven.png")]
    case "report": return ["report", s.path("run0"), "--data", data]
    case "bench": return ["bench", tiny, "--data", data, "--steps", "2", "--singles", "5"]
    case "import": return ["import", s.path("tiny.onnx"), "-o", "g.graph"]
    case "export": return ["export", tiny, "--weights", weights, "-o", "e.onnx"]
    case "quantize": return ["quantize", tiny, "--weights", weights, "--calibrate", data, "--images", "4", "--out", "q.graph"]
    case "infer": return ["infer", tiny, "--weights", weights, "--input", s.path("x.npy"), "-o", "y.npy"]
    default: return [command]
    }
  }

  /// Hostile values: boundary numbers, non-numbers, and paths of every awkward kind (relative to the run's own
  /// working directory, or fixtures of the wrong kind).
  static func values(_ s: Scratch, large: Bool) -> [String] {
    var v = ["0", "-1", "1", "-0", "nan", "inf", "-inf", "1e999", "0x10", "", " ", "3.5", "-avx512f", "+avx2,-sse", "--", "-",
             "r", "x", "é", "日本/語", String(repeating: "p", count: 300), "a/", "./a", "../a", "//a", "/", ".", "..",
             s.path("afile"), s.path("adir"), s.path("adir/"), s.path("fifo"), "/dev/null", "/proc/self/mem", s.path("small"),
             s.path("tiny.graph"), s.path("run0"), s.path("seven.png"), s.path("x.npy"), s.path("run0/weights.safetensors"), "x86_64-pc-windows-msvc",
             "aarch64-unknown-linux-gnu", "znver3", "x86-64-v3", "jit", "interp", "swift", "grad", "llvm", "obj", "step:0:0", "crop:-1"]
    if large { v += ["9223372036854775807", "-9223372036854775808", "18446744073709551616", "4294967296", "50000"] }
    return v
  }

  @Test func commandLinesNeverCrashOrHang() throws {
    let binary = try #require(CLITests.binary, "cnnc must be built")
    let env = ProcessInfo.processInfo.environment
    let runs = env["CNNC_FUZZ_RUNS"].flatMap(Int.init) ?? Self.defaultRuns
    let seed = env["CNNC_FUZZ_SEED"].flatMap(UInt64.init) ?? 20261206
    let scratch = try Scratch(binary: binary)
    defer { try? FileManager.default.removeItem(atPath: scratch.root) }
    let definitions = try Self.definitions(binary)
    #expect(definitions.keys.sorted() == ["bench", "compile", "dump-ir", "eval", "export", "import", "infer", "predict", "quantize", "report", "train"])
    let commands = definitions.keys.sorted()
    // Every run is planned first (one generator, so the seed fixes them all), then run two at a time.
    var rng = SplitMix(seed)
    let plans: [[String]] = (0..<runs).map { i in
      let command = commands[i % commands.count]
      var args = Self.base(command, scratch)
      let arguments = definitions[command]!.filter { !Self.longWorkloads.contains($0.name) }
      for _ in 0..<(1 + rng.below(3)) {
        let a = arguments[rng.below(arguments.count)]
        let pool = Self.values(scratch, large: !Self.workOptions.contains(a.name))
        let value = pool[rng.below(pool.count)]
        switch a.kind {
        case .flag: args.append("--" + a.name)
        case .option: args += rng.below(4) == 0 ? ["--\(a.name)=\(value)"] : ["--" + a.name, value]
        case .positional:
          // The n-th positional of the base invocation (the subcommand is not one) gets the value.
          let positions = args.indices.dropFirst().filter { !args[$0].hasPrefix("-") && ($0 == 1 || !args[$0 - 1].hasPrefix("-")) }
          if let p = positions.isEmpty ? nil : positions[rng.below(positions.count)] { args[p] = value } else { args.append(value) }
        }
      }
      return args
    }
    let failures = FailureList()
    DispatchQueue.concurrentPerform(iterations: 2) { worker in
      for (i, args) in plans.enumerated() where i % 2 == worker {
        let cwd = Path.join(scratch.root, "runs/\(i)")
        try? FileManager.default.createDirectory(atPath: cwd, withIntermediateDirectories: true)
        do {
          let r = try FuzzRun.run(binary, args, cwd: cwd, timeLimit: Self.timeLimit)
          failures.count(r.status, r.timedOut || r.trapped)
          if let problem = Self.problem(r) { failures.add("run \(i) (seed \(seed)): \(problem)\n  cnnc \(args.map { "'\($0)'" }.joined(separator: " "))\n  \(r.stderr.suffix(600))") }
        } catch {
          failures.add("run \(i): cannot run cnnc: \(error)")
        }
        try? FileManager.default.removeItem(atPath: cwd)
      }
    }
    print("command-line fuzzer: \(runs) runs (seed \(seed)): \(failures.statuses.sorted { $0.key < $1.key }.map { "\($0.value) exit \($0.key)" }.joined(separator: ", "))")
    #expect(failures.all.isEmpty, "\(failures.all.count) of \(runs) runs failed:\n\(failures.all.prefix(20).joined(separator: "\n"))")
  }

  /// What is wrong with a run's ending, or nil: a signal, a hang, an unexpected status, a dump, a failure that says nothing.
  static func problem(_ r: FuzzRun.Result) -> String? {
    if r.timedOut { return "no exit within \(Int(timeLimit)) s (a hang)" }
    if r.trapped { return "killed by signal \(r.status)" }
    guard [0, 1, 64].contains(r.status) else { return "exit status \(r.status)" }
    for text in [r.stdout, r.stderr] {
      if let marker = CLITests.crashMarkers.first(where: text.contains) { return "printed '\(marker)'" }
      if CLITests.leaksASwiftValue(text) { return "printed a Swift value's dump" }
    }
    if r.status != 0, r.stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return "failed without a word on standard error" }
    return nil
  }

  /// The fuzzer's own check fails on what it must catch.
  @Test func theCheckCatchesSignalsHangsAndDumps() {
    let ok = FuzzRun.Result(status: 0, stdout: "fine", stderr: "", trapped: false, timedOut: false)
    #expect(Self.problem(ok) == nil)
    #expect(Self.problem(FuzzRun.Result(status: 1, stdout: "", stderr: "error: x", trapped: false, timedOut: false)) == nil)
    for bad in [FuzzRun.Result(status: 4, stdout: "", stderr: "", trapped: true, timedOut: false),
                FuzzRun.Result(status: 9, stdout: "", stderr: "", trapped: false, timedOut: true),
                FuzzRun.Result(status: 2, stdout: "", stderr: "error", trapped: false, timedOut: false),
                FuzzRun.Result(status: 1, stdout: "", stderr: "Fatal error: Index out of range", trapped: false, timedOut: false),
                FuzzRun.Result(status: 1, stdout: "", stderr: "Error: DataError(description: \"x\")", trapped: false, timedOut: false),
                FuzzRun.Result(status: 1, stdout: "", stderr: "", trapped: false, timedOut: false)] {
      #expect(Self.problem(bad) != nil, "\(bad)")
    }
  }
}

/// Failures and exit statuses collected from the fuzzer's worker threads.
final class FailureList: @unchecked Sendable {
  private let lock = NSLock()
  private var items: [String] = []
  private var byStatus: [String: Int] = [:]
  func add(_ s: String) { lock.lock(); items.append(s); lock.unlock() }
  /// Counts a run's ending by exit status (or as a signal or a hang).
  func count(_ status: Int32, _ abnormal: Bool) { lock.lock(); byStatus[abnormal ? "abnormal" : "\(status)", default: 0] += 1; lock.unlock() }
  var statuses: [String: Int] { lock.lock(); defer { lock.unlock() }; return byStatus }
  var all: [String] { lock.lock(); defer { lock.unlock() }; return items }
}

/// SplitMix64: the fuzzer's seeded generator.
struct SplitMix {
  var state: UInt64
  init(_ seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
  mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }
}

/// Runs the binary with a time limit, its output in files (a pipe could fill and stall a chatty run).
enum FuzzRun {
  struct Result {
    var status: Int32
    var stdout: String
    var stderr: String
    var trapped: Bool
    var timedOut: Bool
  }

  static func run(_ binary: String, _ args: [String], cwd: String, timeLimit: Double) throws -> Result {
    let out = Path.join(cwd, ".fuzz-stdout-\(UUID().uuidString)"), err = out + "-err"
    _ = FileManager.default.createFile(atPath: out, contents: nil)
    _ = FileManager.default.createFile(atPath: err, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: out); try? FileManager.default.removeItem(atPath: err) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.arguments = args
    p.environment = ProcessInfo.processInfo.environment.merging(["CNNC_CACHE": CLITests.cache]) { $1 }
    p.currentDirectoryURL = URL(fileURLWithPath: cwd)
    p.standardInput = FileHandle.nullDevice
    p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
    p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
    let done = DispatchSemaphore(value: 0)
    p.terminationHandler = { _ in done.signal() }
    try p.run()
    var timedOut = false
    if done.wait(timeout: .now() + timeLimit) == .timedOut {
      timedOut = true
      kill(p.processIdentifier, SIGKILL)
      done.wait()
    }
    func text(_ path: String) -> String { String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: path)).prefix(1 << 20)) ?? Data(), as: UTF8.self) }
    return Result(status: p.terminationStatus, stdout: text(out), stderr: text(err), trapped: p.terminationReason == .uncaughtSignal && !timedOut,
                  timedOut: timedOut)
  }
}

/// A small IDX data set (MNIST's format and image size): random pixels, labels cycling through `classes` classes.
enum SmallIDX {
  static func write(to dir: String, train: Int, test: Int, classes: Int = 10) throws {
    var state: UInt64 = 1
    func idx(_ dims: [UInt32], magic: UInt32, _ body: (Int) -> UInt8) -> Data {
      var d = Data()
      for v in [magic] + dims { withUnsafeBytes(of: v.bigEndian) { d.append(contentsOf: $0) } }
      let n = Int(dims.reduce(1, *))
      d.append(contentsOf: (0..<n).map(body))
      return d
    }
    for (prefix, count) in [("train", train), ("t10k", test)] {
      try idx([UInt32(count), 28, 28], magic: 0x803) { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: state >> 56)
      }.write(to: URL(fileURLWithPath: "\(dir)/\(prefix)-images-idx3-ubyte"))
      try idx([UInt32(count)], magic: 0x801) { UInt8($0 % classes) }.write(to: URL(fileURLWithPath: "\(dir)/\(prefix)-labels-idx1-ubyte"))
    }
  }
}
