import CNNCTestSupport
import Foundation
import Testing

/// The run directory survives what real runs meet: SIGKILL at any instant (inside checkpoint writes too),
/// a full disk, and a second run on the same `--out`. Each checks, through the CLI, that the newest
/// checkpoint loads and `--resume` continues to the same bytes as a run that was never interrupted.
@Suite(.serialized) struct CrashSafetyTests {
  static func dir(_ tag: String) -> String { NSTemporaryDirectory() + "cnnc-\(tag)-\(UUID().uuidString)" }

  /// A short run with a checkpoint every few steps, so kills land in writes as often as in steps.
  static func trainArgs(_ out: String, resume: Bool = false) -> [String] {
    ["train", "Graphs/tiny.graph", "--jit", "--steps", "2500", "--save-every", "5", "--out", out, "--no-report"] + (resume ? ["--resume"] : [])
  }

  static func start(_ args: [String]) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try #require(CLITests.binary, "cnnc must be built"))
    p.arguments = args
    p.environment = ProcessInfo.processInfo.environment.merging(["CNNC_CACHE": CLITests.cache]) { $1 }
    p.currentDirectoryURL = Fixtures.root
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    return p
  }

  @Test func sigkillAtManyInstantsNeverLosesTheRun() throws {
    let reference = Self.dir("ref"), out = Self.dir("kill")
    let r = try CLITests.run(Self.trainArgs(reference))
    #expect(r.status == 0, "\(r.stderr)")
    var kills = 0, lastStep = -1
    // Each run is killed just after it commits a new checkpoint, plus a few milliseconds, so the kills land
    // in steps and inside the next checkpoint's writes on any machine, whatever its speed.
    for jitter in [0.0, 0.001, 0.003, 0.0005, 0.002, 0.004, 0.0, 0.0015, 0.0025, 0.001, 0.0035, 0.0] {
      let p = try Self.start(Self.trainArgs(out, resume: !Self.steps(out).isEmpty))
      let deadline = Date().addingTimeInterval(60)
      while p.isRunning, Date() < deadline, (Self.steps(out).first ?? -1) <= lastStep { Thread.sleep(forTimeInterval: 0.0005) }
      Thread.sleep(forTimeInterval: jitter)
      if p.isRunning {
        kill(p.processIdentifier, SIGKILL)
        kills += 1
      }
      p.waitUntilExit()
      lastStep = Self.steps(out).first ?? -1
      // Whatever instant it died at, the newest checkpoint is whole: weights and optimiser from one step.
      let steps = Self.steps(out)
      // Two are kept; a kill between committing a third and pruning leaves three for the next run to prune.
      #expect(steps.count <= 3, "old checkpoints are pruned: \(steps)")
      let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints")) ?? []).filter { $0.hasPrefix(".") }
      if !leftovers.isEmpty { #expect(p.terminationReason == .uncaughtSignal, "temporaries only after a kill: \(leftovers)") }
    }
    #expect(kills >= 10, "the runs were killed mid-run (\(kills) of 12)")
    #expect(lastStep < 2500, "the kills came before the end of the run (last checkpoint: step \(lastStep))")
    let finish = try CLITests.run(Self.trainArgs(out, resume: !Self.steps(out).isEmpty))
    #expect(finish.status == 0 || finish.stderr.contains("nothing to resume"), "\(finish.stderr)")
    let a = try Data(contentsOf: URL(fileURLWithPath: reference + "/weights.safetensors"))
    let b = try Data(contentsOf: URL(fileURLWithPath: out + "/weights.safetensors"))
    #expect(a == b, "killed and resumed \(kills) times, the run ends with the uninterrupted run's weights")
    let o1 = try Data(contentsOf: URL(fileURLWithPath: reference + "/optimizer.safetensors"))
    let o2 = try Data(contentsOf: URL(fileURLWithPath: out + "/optimizer.safetensors"))
    #expect(o1.count == o2.count)
    let left = try FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints")
    #expect(left.filter { $0.hasPrefix(".") }.isEmpty, "the finishing run removed the killed runs' temporaries: \(left)")
    #expect(left.filter { $0.hasPrefix("step-") }.count <= 2, "and pruned to two checkpoints: \(left)")
  }

  /// After the training loop (the report) Ctrl-C ends the process at once instead of being ignored.
  @Test func ctrlCDuringTheReportEndsTheRun() throws {
    let out = Self.dir("report-sigint")
    let (p, _, _) = try CLITests.start(["train", "Graphs/tiny.graph", "--jit", "--steps", "5", "--out", out], readingUntil: "checkpoint:")
    p.interrupt()
    p.waitUntilExit()
    #expect(p.terminationReason == .uncaughtSignal && p.terminationStatus == SIGINT, "status \(p.terminationStatus)")
    #expect(!FileManager.default.fileExists(atPath: out + "/report.html"))
    #expect(FileManager.default.fileExists(atPath: out + "/weights.safetensors"), "the checkpoint written before stays")
  }

  /// Steps of the committed checkpoints in a run directory, newest first.
  static func steps(_ out: String) -> [Int] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints")) ?? []
    return names.compactMap { $0.hasPrefix("step-") ? Int($0.dropFirst(5)) : nil }.sorted(by: >)
  }

  @Test func aSecondRunOnTheSameDirectoryIsRefused() throws {
    let out = Self.dir("lock")
    let first = try Self.start(Self.trainArgs(out))
    defer { kill(first.processIdentifier, SIGKILL); first.waitUntilExit() }
    // Wait until the first run holds the lock (it writes the lock file after loading the data).
    let deadline = Date().addingTimeInterval(20)
    while !FileManager.default.fileExists(atPath: out + "/model.graph"), Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
    let second = try CLITests.run(["train", "Graphs/tiny.graph", "--jit", "--steps", "5", "--out", out, "--no-report"])
    #expect(CLITests.failedCleanly(second), "\(second.stderr)")
    #expect(second.stderr.contains("is in use by another cnnc run (PID \(first.processIdentifier))"), "\(second.stderr)")
  }

  /// A tmpfs too small for many checkpoints; needs root (CI runs as root), skipped elsewhere.
  static let canMount: Bool = {
    guard getuid() == 0 else { return false }
    let probe = dir("mnt-probe")
    try? FileManager.default.createDirectory(atPath: probe, withIntermediateDirectories: true)
    defer { _ = try? CLITests.shell("umount \(probe)"); try? FileManager.default.removeItem(atPath: probe) }
    return (try? CLITests.shell("mount -t tmpfs -o size=64k tmpfs \(probe)")) == 0
  }()

  @Test(.enabled(if: canMount)) func aFullDiskFailsCleanlyAndKeepsTheLastCheckpoint() throws {
    let mnt = Self.dir("full")
    try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
    #expect(try CLITests.shell("mount -t tmpfs -o size=64k tmpfs \(mnt)") == 0)
    defer { _ = try? CLITests.shell("umount \(mnt)") }
    let out = mnt + "/run"
    let r = try CLITests.run(["train", "Graphs/tiny.graph", "--jit", "--steps", "200", "--save-every", "1", "--out", out, "--no-report"])
    #expect(CLITests.failedCleanly(r), "\(r.stderr)")
    #expect(r.stderr.contains("No space left on device"), "\(r.stderr)")
    #expect(r.stderr.contains("is intact") || r.stderr.contains("no checkpoint was written"), "\(r.stderr)")
    // The surviving checkpoint resumes elsewhere.
    let copy = Self.dir("full-copy")
    #expect(try CLITests.shell("cp -r \(out) \(copy)") == 0)
    let resumed = try CLITests.run(["train", "Graphs/tiny.graph", "--jit", "--steps", "210", "--out", copy, "--resume", "--no-report"])
    #expect(resumed.status == 0, "\(resumed.stderr)")
    #expect(resumed.stdout.contains("resumed from"))
  }
}
