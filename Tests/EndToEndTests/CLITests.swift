import CNNCTestSupport
import Foundation
import Runtime
import Testing

/// The built `cnnc` binary: exit codes, stdout and stderr of real invocations.
@Suite struct CLITests {
  /// The `cnnc` executable built next to this test bundle.
  static let binary: String? = {
    var dir = Bundle.main.bundleURL
    for _ in 0..<3 {
      let candidate = dir.appendingPathComponent("cnnc").path
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
      dir = dir.deletingLastPathComponent()
    }
    return nil
  }()

  /// Runs a shell command line; returns its exit status.
  static func shell(_ command: String) throws -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", command]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    return p.terminationStatus
  }

  /// Starts cnnc in the repository with its stdout piped and reads that until `text` appears (or ends).
  static func start(_ args: [String], readingUntil text: String) throws -> (process: Process, output: Pipe, seen: Data) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try #require(binary, "cnnc must be built"))
    p.arguments = args
    p.environment = ProcessInfo.processInfo.environment.merging(["CNNC_CACHE": cache]) { $1 }
    p.currentDirectoryURL = Fixtures.root
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    try p.run()
    var seen = Data()
    while !String(decoding: seen, as: UTF8.self).contains(text) {
      let chunk = pipe.fileHandleForReading.availableData
      if chunk.isEmpty { break }
      seen += chunk
    }
    return (p, pipe, seen)
  }

  /// A finished run: its exit status (the signal number when `trapped`), and its output.
  struct Result {
    var status: Int32
    var stdout: String
    var stderr: String
    /// True when the process died of a signal (a trap, a segfault) instead of exiting.
    var trapped: Bool
  }

  /// Text that only a crash or a leaked Swift value prints: a runtime trap, a stack dump, a Foundation error's
  /// raw description, or the dump of an error type that escaped its rendering.
  static let crashMarkers = ["Fatal error", "Stack dump", "Current stack trace", "Swift runtime failure", "NSCocoaErrorDomain",
                             "Error Domain=", "DiagnosticList(", "Illegal instruction", "Segmentation fault"]

  /// True when a run that should fail did so as cnnc means failures to look: one exit status, no trap, no dump.
  static func failedCleanly(_ r: Result) -> Bool {
    !r.trapped && (r.status == 1 || r.status == 64) && !r.stderr.isEmpty && !crashMarkers.contains { r.stderr.contains($0) }
      && !leaksASwiftValue(r.stderr)
  }

  /// True when the text holds a Swift value's dump, `SomeType(field: ...)` after "Error: " (any error type
  /// printed without its rendering), rather than a sentence.
  static func leaksASwiftValue(_ text: String) -> Bool {
    text.split(separator: "\n").contains { line in
      guard let r = line.range(of: "Error: ") else { return false }
      let rest = line[r.upperBound...]
      let name = rest.prefix { $0.isLetter || $0.isNumber || $0 == "." }
      return name.first?.isUppercase == true && rest.dropFirst(name.count).hasPrefix("(")
    }
  }

  @Test func theDumpCheckCatchesADump() {
    #expect(Self.leaksASwiftValue("Error: DataError(description: \"x\")"))
    #expect(Self.leaksASwiftValue("Error: Runtime.CheckpointError(description: \"x\")"))
    #expect(!Self.leaksASwiftValue("Error: --lr must be a positive number, got -1.0"))
    #expect(!Self.leaksASwiftValue("error: cannot read checkpoint (Graphs is a directory)"))
  }

  /// The cache the commands run here use: the build folder's, not the user's (its entries are keyed by
  /// the code they were made from, so a later test run may use them).
  static let cache = Fixtures.root.appendingPathComponent(".build/test-cache").path

  static func run(_ args: [String], cwd: String? = nil, cache: String = CLITests.cache) throws -> Result {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try #require(binary, "cnnc must be built"))
    p.arguments = args
    p.environment = ProcessInfo.processInfo.environment.merging(["CNNC_CACHE": cache]) { $1 }
    p.currentDirectoryURL = URL(fileURLWithPath: cwd ?? Fixtures.root.path)
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self),
                  trapped: p.terminationReason == .uncaughtSignal)
  }

  /// `bench --inference-only` times inference alone on random inputs of the model's shape (no data set) and
  /// prints one JSON object, each figure keyed by batch size.
  @Test func inferenceBenchNeedsNoData() throws {
    let r = try Self.run(["bench", "Graphs/tiny.graph", "--inference-only", "--batches", "1,3", "--seconds", "0.05"])
    #expect(r.status == 0, "\(r.stderr)")
    let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r.stdout)")
    let perImage = try #require(json["inference_us_per_image"] as? [String: Double], "\(r.stdout)")
    #expect(Set(perImage.keys) == ["1", "3"] && perImage.values.allSatisfy { $0 > 0 && $0.isFinite })
    #expect(json["mode"] as? String == "inference" && (json["peak_rss_mb"] as? Double ?? 0) > 0 && json["target"] is [String: Any])
    #expect(json["core_round_trip_ns"] is Double || json["core_round_trip_ns"] is NSNull, "\(r.stdout)")
  }

  /// `--precision bf16` says how its GEMMs run: `compile` names the way, `train` warns where the CPU has no bf16 dot
  /// product, and a precision that does not exist is one clear error.
  @Test func precisionIsNamedAndChecked() throws {
    let plan = try Self.run(["compile", "Graphs/tiny.graph", "--emit", "none", "--cpu", "x86-64-v3", "--precision", "bf16"])
    #expect(plan.status == 0 && plan.stdout.contains("bf16 GEMMs by f32 FMAs (no bf16 dot product)"), "\(plan.stdout)")
    let out = NSTemporaryDirectory() + "cnnc-bf16-\(UUID().uuidString)"
    let train = try Self.run(["train", "Graphs/tiny.graph", "--jit", "--cpu", "x86-64-v3", "--precision", "bf16", "--steps", "2", "--out", out, "--no-report"])
    #expect(train.status == 0 && train.stderr.contains("x86-64-v3 has no bf16 dot product"), "\(train.stderr)")
    let bad = try Self.run(["train", "Graphs/tiny.graph", "--precision", "fp16"])
    #expect(bad.status != 0 && !bad.trapped && bad.stderr.contains("fp16") && bad.stderr.contains("bf16"), "\(bad.stderr)")
  }

  /// `cnnc quantize` calibrates a trained model's convs, writes a graph and weights that eval runs on both back ends
  /// to the same predictions, and refuses what it cannot do: a quantized model again, a model with nothing to
  /// quantize, a percentile out of range; training the quantized graph is refused at its int8 conv.
  @Test func quantizeCalibratesAndEvalRunsTheInt8Model() throws {
    let dir = NSTemporaryDirectory() + "cnnc-int8-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let train = try Self.run(["train", "Graphs/tiny.graph", "--jit", "--steps", "100", "--out", dir + "/run", "--no-report"])
    #expect(train.status == 0, "\(train.stderr)")
    let weights = dir + "/run/weights.safetensors", stem = dir + "/tiny-int8"
    let overwrite = try Self.run(["quantize", "Graphs/tiny.graph", "--weights", weights, "--calibrate", "data/mnist", "--out", dir + "/run/weights.graph"])
    #expect(Self.failedCleanly(overwrite) && overwrite.stderr.contains("would overwrite"), "\(overwrite.stderr)")
    let noSuffix = try Self.run(["quantize", "Graphs/tiny.graph", "--weights", weights, "--calibrate", "data/mnist", "--out", stem])
    #expect(Self.failedCleanly(noSuffix) && noSuffix.stderr.contains(".graph file"), "\(noSuffix.stderr)")
    let q = try Self.run(["quantize", "Graphs/tiny.graph", "--weights", weights, "--calibrate", "data/mnist", "--images", "40", "--method", "percentile", "--out", stem + ".graph"])
    #expect(q.status == 0 && q.stdout.contains("quantized 2 of 2 convolutions and dense layers to int8 (percentile over 40 images"), "\(q.stdout)\(q.stderr)")
    let graph = try String(contentsOfFile: stem + ".graph", encoding: .utf8)
    #expect(graph.contains("input_scale: ") && graph.contains("input_zero_point: "), "\(graph)")
    // Calibrating in the interpreter picks the same zero points and scales within float rounding of the compiled sums.
    let interp = try Self.run(["quantize", "Graphs/tiny.graph", "--weights", weights, "--calibrate", "data/mnist", "--images", "40", "--method", "percentile",
                               "--backend", "interp", "--out", dir + "/interp.graph"])
    #expect(interp.status == 0, "\(interp.stderr)")
    func quantizations(_ text: String) -> [(Double, Int)] {
      text.split(separator: "\n").compactMap { line in
        guard let s = line.range(of: "input_scale: "), let z = line.range(of: "input_zero_point: ") else { return nil }
        return (Double(line[s.upperBound...].prefix { $0 != "," })!, Int(line[z.upperBound...].prefix { $0.isNumber })!)
      }
    }
    let (compiled, interpreted) = (quantizations(graph), quantizations(try String(contentsOfFile: dir + "/interp.graph", encoding: .utf8)))
    #expect(compiled.count == 2 && compiled.count == interpreted.count
            && zip(compiled, interpreted).allSatisfy { abs($0.0 - $1.0) <= 1e-5 * $1.0 && $0.1 == $1.1 }, "\(compiled) \(interpreted)")
    let plan = try Self.run(["compile", stem + ".graph", "--emit", "none"])
    #expect(plan.status == 0 && plan.stdout.contains("int8") && !plan.stdout.contains("train arena"), "\(plan.stdout)\(plan.stderr)")
    var accuracies: [String] = []
    for backend in ["jit", "interp"] {
      let eval = try Self.run(["eval", stem + ".graph", "--weights", stem + ".safetensors", "--backend", backend])
      #expect(eval.status == 0, "\(eval.stderr)")
      accuracies.append(eval.stdout.split(separator: "\n").first.map(String.init) ?? "")
    }
    #expect(accuracies[0] == accuracies[1] && accuracies[0].hasPrefix("test accuracy"), "\(accuracies)")
    let again = try Self.run(["quantize", stem + ".graph", "--weights", stem + ".safetensors", "--calibrate", "data/mnist", "--out", dir + "/twice.graph"])
    #expect(Self.failedCleanly(again) && again.stderr.contains("quantized already"), "\(again.stderr)")
    let none = try Self.run(["quantize", "Graphs/tiny.graph", "--weights", weights, "--calibrate", "data/mnist", "--keep-first", "--keep-last", "--out", dir + "/none.graph"])
    #expect(Self.failedCleanly(none) && none.stderr.contains("no layer int8 can take"), "\(none.stderr)")
    let percentile = try Self.run(["quantize", "Graphs/tiny.graph", "--weights", weights, "--calibrate", "data/mnist", "--method", "percentile", "--percentile", "101", "--out", dir + "/p.graph"])
    #expect(Self.failedCleanly(percentile) && percentile.stderr.contains("--percentile"), "\(percentile.stderr)")
    // The reduced range: every int8 layer's weights within ±64, run on the host and on AVX2 to the same predictions.
    let reduced = try Self.run(["quantize", "Graphs/tiny.graph", "--weights", weights, "--calibrate", "data/mnist", "--images", "40", "--reduce-range", "--out", dir + "/reduced.graph"])
    #expect(reduced.status == 0 && reduced.stdout.contains("weights within ±64"), "\(reduced.stdout)\(reduced.stderr)")
    let reducedGraph = try String(contentsOfFile: dir + "/reduced.graph", encoding: .utf8)
    #expect(reducedGraph.components(separatedBy: "weight_steps: 64").count == 3, "\(reducedGraph)")
    var reducedAccuracies: [String] = []
    #if arch(x86_64)
    let cpus: [String?] = ["x86-64-v3", nil]
    #else
    let cpus: [String?] = [nil]
    #endif
    for cpu in cpus {
      let eval = try Self.run(["eval", dir + "/reduced.graph", "--weights", dir + "/reduced.safetensors"] + (cpu.map { ["--cpu", $0] } ?? []))
      #expect(eval.status == 0, "\(eval.stderr)")
      reducedAccuracies.append(eval.stdout.split(separator: "\n").first.map(String.init) ?? "")
    }
    #expect(Set(reducedAccuracies).count == 1, "\(reducedAccuracies)")
    let retrain = try Self.run(["train", stem + ".graph", "--jit", "--steps", "2", "--out", dir + "/retrain", "--no-report"])
    #expect(Self.failedCleanly(retrain) && retrain.stderr.contains("runs at inference only"), "\(retrain.stderr)")
  }

  @Test func compileShowsThePlan() throws {
    let r = try Self.run(["compile", "Graphs/simplecnn.graph", "--emit", "none"])
    #expect(r.status == 0)
    #expect(r.stdout.contains("421,642"))
    #expect(r.stdout.contains("8.48 MFLOP per image"))
    #expect(r.stdout.contains("train arena:"))
  }

  /// A second run of the same training step takes every module's object code from the cache and trains to
  /// the same weights; `--no-cache` compiles them all again.
  @Test func aSecondRunTakesItsObjectCodeFromTheCache() throws {
    let cache = NSTemporaryDirectory() + "cnnc-cli-cache-\(UUID().uuidString)", out = NSTemporaryDirectory() + "cnnc-cache-run-\(UUID().uuidString)"
    defer { for d in [cache, out] { try? FileManager.default.removeItem(atPath: d) } }
    let args = ["train", "Graphs/tiny.graph", "--jit", "--steps", "5", "--no-report", "--out"]
    let first = try Self.run(args + [out + "/a"], cache: cache), second = try Self.run(args + [out + "/b"], cache: cache)
    let uncached = try Self.run(args + [out + "/c", "--no-cache"], cache: cache)
    for r in [first, second, uncached] { #expect(r.status == 0, "\(r.stderr)") }
    #expect(!first.stdout.contains("from the cache") && second.stdout.contains("every module from the cache"), "\(first.stdout)\n\(second.stdout)")
    #expect(!uncached.stdout.contains("from the cache"), "\(uncached.stdout)")
    let weights = try ["a", "b", "c"].map { try Data(contentsOf: URL(fileURLWithPath: "\(out)/\($0)/weights.safetensors")) }
    #expect(weights[0] == weights[1] && weights[1] == weights[2])
  }

  @Test func invalidGraphGivesItsDiagnosticsAndExitsNonZero() throws {
    let r = try Self.run(["compile", "Graphs/invalid/unknown_attribute.graph"])
    #expect(r.status == 1)
    let expected = try String(contentsOf: Fixtures.graphs.appendingPathComponent("invalid/unknown_attribute.expected"), encoding: .utf8)
    #expect(r.stderr == expected)
  }

  /// Each absurd option or file names the value and the rule, in one line, with exit status 1 or 64.
  @Test func absurdOptionsAndFilesNameTheRule() throws {
    let cases: [([String], String)] = [
      (["train", "Graphs/tiny.graph", "--lr", "-1"], "--lr must be a positive number, got -1.0"),
      (["train", "Graphs/tiny.graph", "--momentum=-5"], "--momentum must satisfy 0 <= momentum < 1, got -5.0"),
      (["train", "Graphs/tiny.graph", "--weight-decay=-1e30"], "--weight-decay must be a non-negative number"),
      (["train", "Graphs/tiny.graph", "--patience=-1", "--val", "0.2"], "--patience must be at least 1, got -1"),
      (["train", "Graphs/tiny.graph", "--patience", "3"], "--patience needs a validation split"),
      (["train", "Graphs/tiny.graph", "--save-every", "0"], "--save-every must be at least 1"),
      (["predict", "Graphs/tiny.graph", "--weights", "x", "Tests/Fixtures/seven.png", "--index", "-1"], "--index must be at least 0, got -1"),
      (["predict", "Graphs/tiny.graph", "--weights", "x", "Tests/Fixtures/seven.png"], "cannot read checkpoint"),
      (["predict", "Graphs/tiny.graph", "--weights", "x", "Tests/Fixtures/seven.png", "--top", "0"], "--top must be at least 1"),
      (["train", "Graphs/tiny.graph", "--jit", "--batch", "100000"], "--batch 100000 exceeds the 60000 training examples"),
      (["train", "Graphs/tiny.graph", "--jit", "--out", "Graphs/tiny.graph"], "Graphs/tiny.graph exists and is not a directory"),
      (["compile", "Graphs/invalid/backward_dialect.graph"], "'relu_grad' is an op of the backward dialect"),
      (["compile", "Graphs"], "Graphs is a directory, not a regular file"),
      (["train", "Graphs/tiny.graph", "--normalize", "imagine"], "--normalize must be mnist, imagenet or data, got 'imagine'"),
      (["train", "Graphs/tiny.graph", "--normalize", "imagenet"], "the normalisation has 3 means and stds; the images have 1 channels"),
      (["train", "Graphs/tiny.graph", "--transform", "flip"], "--transform flip is random"),
      (["train", "Graphs/tiny.graph", "--transform", "resize:0"], "resize takes a size of 1 to 8192 pixels"),
      (["eval", "Graphs/tiny.graph", "--weights", "x", "--normalize", "cifar"], "--normalize must be imagenet or mnist, got 'cifar'"),
      (["predict", "Graphs/tiny.graph", "--weights", "x", "Tests/Fixtures/seven.png", "--mean", "0.5"], "--mean and --std go together"),
      (["train", "Graphs/tiny.graph", "--head-lr", "0"], "--head-lr must be a positive number, got 0.0"),
      (["train", "Graphs/tiny.graph", "--replace-head", "1"], "--replace-head takes 2 to 65536 outputs, got 1"),
      (["train", "Graphs/tiny.graph", "--freeze", "zzz"], "--freeze zzz names no parameter; they are conv1.weight, conv1.bias, fc1.weight, fc1.bias"),
      (["train", "Graphs/tiny.graph", "--freeze-backbone", "--freeze", "fc1"], "--freeze leaves no parameter to train"),
      (["train", "Graphs/tiny.graph", "--monitor", "train_loss"], "--monitor must be val_acc or val_loss, got 'train_loss'"),
      (["train", "Graphs/tiny.graph", "--min-delta=-1"], "--min-delta must be a non-negative number"),
      (["train", "Graphs/tiny.graph", "--log-every=-5"], "--log-every must be at least 0"),
      (["train", "Graphs/tiny.graph", "--val", "0.2", "--val-split", "first"], "--val-split must be random or last, got 'first'"),
      (["train", "Graphs/tiny.graph", "--restore-best"], "--restore-best needs a validation split"),
      (["train", "Graphs/tiny.graph", "--lr-schedule", "step:0:2"], "--lr-schedule 'step:0:2': expected constant, step:EPOCHS:GAMMA"),
      (["train", "Graphs/tiny.graph", "--mean", "0.5"], "--mean and --std go together"),
      (["train", "Graphs/tiny.graph", "--mean", "0.5", "--std", "0"], "--std positive numbers"),
      (["train", "Graphs/tiny.graph", "--mean", "0.5,0.4", "--std", "0.2"], "as many of each"),
      (["compile", "Tests/Fixtures/two_images.graph", "--emit", "none"], "second f32 input 'b': a compiled graph reads exactly one image input ('a')"),
    ]
    for (args, expected) in cases {
      let r = try Self.run(args)
      #expect(Self.failedCleanly(r), "\(args): status \(r.status), \(r.stderr)")
      #expect(r.stderr.contains(expected), "\(args): \(r.stderr)")
      #expect(!r.stderr.contains("Missing value"), "a value that was given is not missing: \(args): \(r.stderr)")
    }
  }

  /// Early stopping says when it stopped, which epoch was best and where its weights are; every epoch line has
  /// the validation and test loss; piped output gets a plain line every --log-every steps; a cut-short epoch
  /// says so; the banner names every optimiser setting.
  @Test func trainingSaysWhatItDid() throws {
    let out = NSTemporaryDirectory() + "cnnc-es-\(UUID().uuidString)"
    // No val_loss improvement can exceed 1.0 after the first epoch, so the run stops after epoch 2 on any machine.
    let r = try Self.run(["train", "Graphs/tiny.graph", "--jit", "--epochs", "15", "--val", "0.2", "--patience", "1", "--monitor", "val_loss",
                          "--min-delta", "1", "--restore-best", "--out", out, "--no-report"])
    #expect(r.status == 0, "\(r.stderr)")
    // --restore-best: weights.safetensors is now epoch 1's; the last step's checkpoint (epoch 2) is untouched.
    let weights = try Data(contentsOf: URL(fileURLWithPath: out + "/weights.safetensors"))
    #expect(weights == (try Data(contentsOf: URL(fileURLWithPath: out + "/best.safetensors"))))
    let last = try FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints").filter { !$0.hasPrefix(".") }.sorted().last!
    #expect(weights != (try Data(contentsOf: URL(fileURLWithPath: out + "/checkpoints/" + last + "/weights.safetensors"))))
    #expect(r.stdout.contains("now holds epoch 1's weights"), "\(r.stdout)")
    #expect(r.stdout.contains("stopped early after epoch 2: val_loss did not improve for 1 epochs"), "\(r.stdout)")
    #expect(r.stdout.contains("best epoch 1: val_loss ") && r.stdout.contains("its weights: \(out)/best.safetensors"), "\(r.stdout)")
    #expect(r.stdout.contains(", val loss ") && r.stdout.contains(", test loss "), "\(r.stdout)")
    #expect(r.stdout.contains("epoch 1 step 100/750: loss "), "stdout is a pipe here: \(r.stdout)")
    #expect(r.stdout.contains("adam lr 0.001 (betas 0.9, 0.999, eps 1e-08, weight decay 0.0)"), "\(r.stdout)")
    let s = try Self.run(["train", "Graphs/tiny.graph", "--jit", "--steps", "30", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9",
                          "--log-every", "10", "--out", out + "-sgd", "--no-report"])
    #expect(s.status == 0, "\(s.stderr)")
    #expect(s.stdout.contains("- 30 of 937 steps (stopped by --steps)"), "\(s.stdout)")
    #expect(s.stdout.contains("sgd lr 0.05 (momentum 0.9, weight decay 0.0"), "\(s.stdout)")
    #expect(s.stdout.contains("epoch 1 step 20/937: loss ") && !s.stdout.contains("step 15/"), "\(s.stdout)")
  }

  /// Test images of another size than the graph's input are refused by eval, not read past their end.
  @Test func evalChecksTheImageSize() throws {
    let dir = NSTemporaryDirectory() + "cnnc-small-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    func idx(_ dims: [UInt32], magic: UInt32) -> Data {
      var d = Data()
      for v in [magic] + dims { withUnsafeBytes(of: v.bigEndian) { d.append(contentsOf: $0) } }
      return d + Data(repeating: 0, count: Int(dims.reduce(1, *)))
    }
    try idx([20, 14, 14], magic: 0x803).write(to: URL(fileURLWithPath: dir + "/t10k-images-idx3-ubyte"))
    try idx([20], magic: 0x801).write(to: URL(fileURLWithPath: dir + "/t10k-labels-idx1-ubyte"))
    let out = NSTemporaryDirectory() + "cnnc-w-\(UUID().uuidString)"
    #expect(try Self.run(["train", "Graphs/tiny.graph", "--jit", "--steps", "1", "--out", out, "--no-report"]).status == 0)
    let r = try Self.run(["eval", "Graphs/tiny.graph", "--weights", out + "/weights.safetensors", "--data", dir])
    #expect(r.status == 1)
    #expect(r.stderr.contains("holds 14x14 images; the graph takes [N, 1, 28, 28]"), "\(r.stderr)")
  }

  /// ResNet-8 trains on CIFAR-10 binary files (generated: each class a colour pattern under noise) with
  /// per-channel normalisation measured on them, and eval reads that normalisation back from the checkpoint.
  @Test func resnet8TrainsOnCIFARFilesAndEvalAgrees() throws {
    let dir = NSTemporaryDirectory() + "cnnc-cifar-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var seeded = UInt64(7)
    func next() -> Int { seeded = seeded &* 6364136223846793005 &+ 1442695040888963407; return Int(seeded >> 33) }
    let templates = (0..<10).map { _ in (0..<3072).map { _ in next() % 256 } }
    func write(_ name: String, _ count: Int) throws {
      var d = Data()
      for _ in 0..<count {
        let k = next() % 10
        d.append(UInt8(k))
        d.append(contentsOf: templates[k].map { UInt8(max(0, min(255, $0 + next() % 81 - 40))) })
      }
      try d.write(to: URL(fileURLWithPath: "\(dir)/\(name)"))
    }
    for b in 1...5 { try write("data_batch_\(b).bin", 128) }
    try write("test_batch.bin", 128)
    let out = NSTemporaryDirectory() + "cnnc-r8-\(UUID().uuidString)"
    let r = try Self.run(["train", "Graphs/resnet8.graph", "--jit", "--data", dir, "--epochs", "3", "--normalize", "data", "--out", out, "--no-report"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stdout.contains("640 train, 128 test images") && r.stdout.contains("per channel"), "\(r.stdout)")
    let accuracy = try #require(r.stdout.split(separator: "\n").last { $0.hasPrefix("epoch 3:") }?.split(separator: " ").last { $0.hasSuffix("%") })
    #expect(Double(accuracy.dropLast())! > 90, "\(r.stdout)")
    let e = try Self.run(["eval", "Graphs/resnet8.graph", "--weights", out + "/weights.safetensors", "--data", dir])
    #expect(e.status == 0, "\(e.stderr)")
    #expect(e.stdout.contains(String(accuracy)), "eval: \(e.stdout) train: \(accuracy)")
    let bad = try Self.run(["train", "Graphs/resnet8.graph", "--jit", "--data", dir, "--steps", "1", "--mean", "0.5,0.5", "--std", "0.2,0.2", "--out", out + "-bad"])
    #expect(Self.failedCleanly(bad) && bad.stderr.contains("2 means and stds; the images have 3 channels"), "\(bad.stderr)")
  }

  /// A seeded linear congruential generator for generated test images.
  struct Draws {
    var state: UInt64
    mutating func next() -> Int { state = state &* 6364136223846793005 &+ 1442695040888963407; return Int(state >> 33) }
  }

  /// PNG folders per class (blue, green, red) under `dir`, `counts` images per split: class k lifts plane 2 - k (blue
  /// is the third) above the others, under noise of +-`noise`, each image of the size `size` draws.
  static func colourFolders(_ dir: String, counts: [(String, Int)], noise: Int, seed: UInt64, size: (inout Draws) -> (width: Int, height: Int)) throws {
    var draws = Draws(state: seed)
    for (split, count) in counts {
      for (k, name) in ["blue", "green", "red"].enumerated() {
        try FileManager.default.createDirectory(atPath: "\(dir)/\(split)/\(name)", withIntermediateDirectories: true)
        for i in 0..<count {
          let (w, h) = size(&draws)
          let pixels = (0..<(w * h)).flatMap { _ in (0..<3).map { c in UInt8(max(0, min(255, (c == 2 - k ? 170 : 60) + draws.next() % (2 * noise + 1) - noise))) } }
          try Data(PNGWriter.encode(width: w, height: h, channels: 3, pixels: pixels)).write(to: URL(fileURLWithPath: "\(dir)/\(split)/\(name)/\(i).png"))
        }
      }
    }
  }

  /// A small colour CNN for 8x8 RGB images of the three classes of `colourFolders`, written into `dir`.
  static func colourGraph(in dir: String) throws -> String {
    let graph = dir + "/colour.graph"
    try """
      input image: f32[N, 3, 8, 8]
      input label: i32[N]
      conv = conv2d(image, filters: 8, kernel: 3, padding: 1)
      relu = relu(conv)
      pool = maxpool(relu, size: 2)
      flat = flatten(pool)
      fc = dense(flat, units: 3)
      loss = cross_entropy(fc, label)
      output fc
      minimize loss
      """.write(toFile: graph, atomically: true, encoding: .utf8)
    return graph
  }

  /// A colour CNN trains on PNG folders per class (generated: each class one dominant colour under noise),
  /// eval agrees with the last epoch, and predict classifies a colour PNG of the test set.
  @Test func trainsOnPNGFoldersPerClassAndPredictsColourImages() throws {
    let dir = NSTemporaryDirectory() + "cnnc-folders-\(UUID().uuidString)"
    try Self.colourFolders(dir, counts: [("train", 40), ("test", 12)], noise: 50, seed: 11) { _ in (8, 8) }
    let graph = try Self.colourGraph(in: dir)
    let out = dir + "/run"
    let r = try Self.run(["train", graph, "--jit", "--data", dir, "--epochs", "4", "--batch", "16", "--normalize", "data", "--out", out, "--no-report"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stdout.contains("120 train, 36 test images"), "\(r.stdout)")
    let accuracy = try #require(r.stdout.split(separator: "\n").last { $0.hasPrefix("epoch 4:") }?.split(separator: " ").last { $0.hasSuffix("%") })
    #expect(Double(accuracy.dropLast())! > 90, "\(r.stdout)")
    let e = try Self.run(["eval", graph, "--weights", out + "/weights.safetensors", "--data", dir])
    #expect(e.status == 0 && e.stdout.contains(String(accuracy)), "eval: \(e.stdout) \(e.stderr) train: \(accuracy)")
    let p = try Self.run(["predict", graph, "--weights", out + "/weights.safetensors", "\(dir)/test/red/0.png", "--json"])
    #expect(p.status == 0 && p.stdout.contains("\"prediction\": 2"), "\(p.stdout) \(p.stderr)")
    // A JPEG photo of the same kind, and a folder that mixes it with the PNGs.
    let jpeg = Fixtures.root.appendingPathComponent("Tests/Fixtures/images/red8.jpg").path
    let j = try Self.run(["predict", graph, "--weights", out + "/weights.safetensors", jpeg, "--json"])
    #expect(j.status == 0 && j.stdout.contains("\"prediction\": 2"), "\(j.stdout) \(j.stderr)")
    try FileManager.default.copyItem(atPath: jpeg, toPath: "\(dir)/test/red/photo.jpg")
    let f = try Self.run(["predict", graph, "--weights", out + "/weights.safetensors", "\(dir)/test/red"])
    #expect(f.status == 0 && f.stdout.contains("photo.jpg"), "\(f.stdout) \(f.stderr)")
  }

  /// Photos of any size (PNG and JPEG) train through `--transform` with ImageNet's normalisation; the checkpoint
  /// records both, so eval and predict prepare images the same way unasked, and flags override them.
  /// Training photos read from disk per batch with torchvision's training recipe (random_resized_crop, flip) while
  /// the test photos take --transform: the run learns, says how long its steps waited for photos, records the
  /// evaluation transform, and is the same bytes with one thread or two; misuse is one clear error.
  @Test func photosStreamWithRandomResizedCrops() throws {
    let dir = NSTemporaryDirectory() + "cnnc-augment-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try Self.colourFolders(dir, counts: [("train", 30), ("test", 9)], noise: 40, seed: 6) { draws in (9 + draws.next() % 12, 9 + draws.next() % 12) }
    let graph = try Self.colourGraph(in: dir)
    var weights: [Data] = []
    for threads in ["1", "2"] {
      let out = "\(dir)/run\(threads)"
      let r = try Self.run(["train", graph, "--jit", "--data", dir, "--epochs", "4", "--batch", "10", "--augment", "random_resized_crop:8,flip",
                            "--transform", "resize:10,center_crop:8", "--normalize", "imagenet", "--threads", threads, "--out", out, "--no-report"])
      #expect(r.status == 0, "\(r.stderr)")
      #expect(r.stdout.contains("90 train, 27 test images, photos read per batch") && r.stdout.contains("waited"), "\(r.stdout)")
      let accuracy = try #require(r.stdout.split(separator: "\n").last { $0.hasPrefix("epoch 4:") }?.split(separator: " ").first { $0.hasSuffix("%") && $0 != "acc" })
      #expect(Double(accuracy.dropLast())! > 80, "\(r.stdout)")
      weights.append(try Data(contentsOf: URL(fileURLWithPath: out + "/weights.safetensors")))
      let e = try Self.run(["eval", graph, "--weights", out + "/weights.safetensors", "--data", dir])
      #expect(e.status == 0 && !e.stderr.contains("note:"), "\(e.stderr)")
    }
    #expect(weights[0] == weights[1], "one thread and two train the same bytes")
    let late = try Self.run(["train", graph, "--jit", "--data", dir, "--augment", "flip,random_resized_crop:8", "--out", dir + "/late", "--no-report"])
    #expect(late.status != 0 && late.stderr.contains("random_resized_crop comes first"), "\(late.stderr)")
    let idx = try Self.run(["train", "--jit", "--augment", "random_resized_crop:28", "--out", dir + "/idx", "--no-report"])
    #expect(idx.status != 0 && idx.stderr.contains("random_resized_crop reads photo folders"), "\(idx.stderr)")
  }

  @Test func photosOfAnySizeTrainThroughRecordedTransforms() throws {
    let dir = NSTemporaryDirectory() + "cnnc-photos-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try Self.colourFolders(dir, counts: [("train", 30), ("test", 9)], noise: 40, seed: 5) { draws in (9 + draws.next() % 12, 9 + draws.next() % 12) }
    let jpeg = Fixtures.root.appendingPathComponent("Tests/Fixtures/images/red8.jpg").path
    try FileManager.default.copyItem(atPath: jpeg, toPath: "\(dir)/train/red/photo.jpg")
    let graph = try Self.colourGraph(in: dir)
    // Without a transform the sizes differ, and the error says what makes them one.
    let refused = try Self.run(["train", graph, "--jit", "--data", dir, "--epochs", "1", "--out", dir + "/no", "--no-report"])
    #expect(refused.status != 0 && refused.stderr.contains("--transform resize:N,center_crop:N"), "\(refused.stderr)")
    let out = dir + "/run"
    let r = try Self.run(["train", graph, "--jit", "--data", dir, "--epochs", "5", "--batch", "10", "--transform", "resize:10,center_crop:8",
                          "--normalize", "imagenet", "--out", out, "--no-report"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stdout.contains("91 train, 27 test images") && r.stdout.contains("resize:10,center_crop:8, (x/255 - [0.485"), "\(r.stdout)")
    let accuracy = try #require(r.stdout.split(separator: "\n").last { $0.hasPrefix("epoch 5:") }?.split(separator: " ").last { $0.hasSuffix("%") })
    #expect(Double(accuracy.dropLast())! > 90, "\(r.stdout)")
    let weights = out + "/weights.safetensors"
    let e = try Self.run(["eval", graph, "--weights", weights, "--data", dir])
    #expect(e.status == 0 && e.stdout.contains(String(accuracy)) && !e.stderr.contains("note:"), "eval: \(e.stdout) \(e.stderr) train: \(accuracy)")
    // A large photo, resized and cropped as in training.
    try Self.colourFolders(dir + "/big", counts: [("red", 1)], noise: 40, seed: 9) { _ in (40, 25) }
    try FileManager.default.copyItem(atPath: dir + "/big/red/red/0.png", toPath: dir + "/big.png")
    let p = try Self.run(["predict", graph, "--weights", weights, dir + "/big.png", "--json"])
    #expect(p.status == 0 && p.stdout.contains("\"prediction\": 2, \"class\": \"red\""), "\(p.stdout) \(p.stderr)")
    // The class folders' names, recorded; or a labels file's, one per line.
    let named = try Self.run(["predict", graph, "--weights", weights, dir + "/big.png", "--top", "2"])
    #expect(named.status == 0 && named.stdout.contains("prediction: 2 red (p = "), "\(named.stdout) \(named.stderr)")
    try "azure\nemerald\nscarlet\n".write(toFile: dir + "/names.txt", atomically: true, encoding: .utf8)
    let labelled = try Self.run(["predict", graph, "--weights", weights, "\(dir)/test/red", "--labels", dir + "/names.txt"])
    #expect(labelled.status == 0 && labelled.stdout.contains("0.png: 2 scarlet (p = "), "\(labelled.stdout) \(labelled.stderr)")
    try "azure\nemerald\n".write(toFile: dir + "/two.txt", atomically: true, encoding: .utf8)
    let short = try Self.run(["predict", graph, "--weights", weights, dir + "/big.png", "--labels", dir + "/two.txt"])
    #expect(short.status != 0 && short.stderr.contains("names 2 classes, one per line; the model has 3"), "\(short.stderr)")
    let overridden = try Self.run(["predict", graph, "--weights", weights, dir + "/big.png", "--transform", "resize:8x8", "--normalize", "mnist"])
    #expect(overridden.status == 0, "\(overridden.stderr)")
    let bad = try Self.run(["predict", graph, "--weights", weights, dir + "/big.png", "--transform", "resize:9"])
    #expect(bad.status != 0 && bad.stderr.contains("is 14x9 after --transform resize:9; the graph takes 8x8 images"), "\(bad.stderr)")
    // infer takes the photos too, prepared as the checkpoint records, and writes their logits in name order.
    let inferred = try Self.run(["infer", graph, "--weights", weights, "--input", "\(dir)/test/red", "-o", dir + "/red.npy"])
    #expect(inferred.status == 0 && inferred.stdout.contains("image 0: \(dir)/test/red/0.png") && inferred.stdout.contains("[9, 3]"), "\(inferred.stdout) \(inferred.stderr)")
    let logits = try NPYArray.read(dir + "/red.npy")
    let reds = (0..<9).filter { i in (0..<3).max { logits.values[i * 3 + $0] < logits.values[i * 3 + $1] } == 2 }.count
    #expect(logits.shape == [9, 3] && reds >= 8, "\(logits.values)")
    let arrayWithTransform = try Self.run(["infer", graph, "--weights", weights, "--input", dir + "/red.npy", "-o", dir + "/x.npy", "--transform", "resize:8x8"])
    #expect(arrayWithTransform.status != 0 && arrayWithTransform.stderr.contains("is an array, used as it is"), "\(arrayWithTransform.stderr)")
    let random = try Self.run(["eval", graph, "--weights", weights, "--data", dir, "--transform", "random_resized_crop:8"])
    #expect(random.status != 0 && random.stderr.contains("is random"), "\(random.stderr)")
    // The classifier alone: the conv's gradients are never computed, and the step says how much that saves.
    let head = try Self.run(["train", graph, "--jit", "--data", dir, "--epochs", "1", "--batch", "10", "--transform", "resize:10,center_crop:8",
                             "--freeze-backbone", "--out", dir + "/head", "--no-report"])
    #expect(head.status == 0 && head.stdout.contains("frozen: 2 of 4 parameter tensors; the step takes") && head.stdout.contains("% less)"),
            "\(head.stdout) \(head.stderr)")
    // Transfer: the trained model as ONNX, a new two-class head on two of the classes, the backbone frozen: its
    // weights come out as they went in, the head has two outputs, and eval reads the run's graph.
    let exported = try Self.run(["export", graph, "--weights", weights, "-o", dir + "/colour.onnx"])
    #expect(exported.status == 0, "\(exported.stderr)")
    let two = dir + "/two"
    for split in ["train", "test"] {
      for name in ["blue", "red"] {
        try FileManager.default.createDirectory(atPath: "\(two)/\(split)", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "\(dir)/\(split)/\(name)", toPath: "\(two)/\(split)/\(name)")
      }
    }
    let tuned = dir + "/tuned"
    let t = try Self.run(["train", dir + "/colour.onnx", "--jit", "--data", two, "--epochs", "3", "--batch", "10", "--transform", "resize:10,center_crop:8",
                          "--normalize", "imagenet", "--replace-head", "2", "--freeze-backbone", "--head-lr", "0.01", "--out", tuned, "--no-report"])
    #expect(t.status == 0 && t.stdout.contains("head: fc replaced by a dense layer of 2 outputs") && t.stdout.contains("head: fc trains at lr 0.01, the rest at 0.001"),
            "\(t.stdout) \(t.stderr)")
    let before = try SafeTensors.read(from: weights), after = try SafeTensors.read(from: tuned + "/weights.safetensors")
    #expect(after.tensors["conv.weight"]!.data == before.tensors["conv.weight"]!.data && after.tensors["conv.bias"]!.data == before.tensors["conv.bias"]!.data)
    #expect(after.tensors["fc.weight"]!.shape == [2, 128] && after.tensors["fc.bias"]!.shape == [2])
    let back = try Self.run(["eval", tuned + "/model.graph", "--weights", tuned + "/weights.safetensors", "--data", two])
    #expect(back.status == 0 && back.stdout.contains("test accuracy"), "\(back.stdout) \(back.stderr)")
  }

  /// An ONNX model through every command: import writes the .graph and weights, train starts from the model's
  /// own weights, export writes the trained model, eval and predict read the exported one with its weights;
  /// an unsupported file is one error.
  @Test func onnxModelsImportTrainExportAndEvaluate() throws {
    let dir = NSTemporaryDirectory() + "cnnc-onnx-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let model = Fixtures.root.appendingPathComponent("Tests/Fixtures/onnx/tiny.onnx").path
    let i = try Self.run(["import", model, "-o", dir + "/tiny.graph", "--weights-out", dir + "/tiny.safetensors"])
    #expect(i.status == 0 && i.stdout.contains("(4 tensors, 1490 values)"), "\(i.stdout) \(i.stderr)")
    // The imported weights evaluate as the model does, whether read from the .onnx or from the files import wrote.
    let direct = try Self.run(["eval", model])
    let written = try Self.run(["eval", dir + "/tiny.graph", "--weights", dir + "/tiny.safetensors"])
    #expect(direct.status == 0 && direct.stdout.split(separator: "\n").first == written.stdout.split(separator: "\n").first, "\(direct.stdout) \(direct.stderr)")
    let t = try Self.run(["train", model, "--jit", "--steps", "60", "--out", dir + "/run", "--no-report"])
    #expect(t.status == 0, "\(t.stderr)")
    let e = try Self.run(["export", dir + "/run/model.graph", "--weights", dir + "/run/weights.safetensors", "-o", dir + "/trained.onnx"])
    #expect(e.status == 0 && e.stdout.contains("opset 17, 4 initializers"), "\(e.stdout) \(e.stderr)")
    let accuracy = try #require(t.stdout.split(separator: "\n").last { $0.hasPrefix("epoch 1:") }?.split(separator: " ").last { $0.hasSuffix("%") })
    let back = try Self.run(["eval", dir + "/trained.onnx"])
    #expect(back.status == 0 && back.stdout.contains(String(accuracy)), "\(back.stdout) \(back.stderr) train: \(accuracy)")
    // An ONNX model records no normalisation: the command says which it used.
    #expect(back.stderr.contains("records no input normalisation; using MNIST's"), "\(back.stderr)")
    let p = try Self.run(["predict", dir + "/trained.onnx", "data/mnist/t10k-images-idx3-ubyte.gz", "--count", "2", "--json", "--backend", "jit"])
    #expect(p.status == 0 && p.stdout.split(separator: "\n").count == 2, "\(p.stdout) \(p.stderr)")
    try Data("not an onnx model".utf8).write(to: URL(fileURLWithPath: dir + "/bad.onnx"))
    let bad = try Self.run(["compile", dir + "/bad.onnx"])
    #expect(Self.failedCleanly(bad) && bad.stderr.contains("bad.onnx: not an ONNX model"), "\(bad.stderr)")
  }

  /// A finished run resumed with the same plan has nothing to do, says so, and leaves its history alone.
  @Test func resumingPastThePlanIsRefusedAndKeepsTheHistory() throws {
    let out = NSTemporaryDirectory() + "cnnc-done-\(UUID().uuidString)"
    #expect(try Self.run(["train", "Graphs/tiny.graph", "--jit", "--steps", "20", "--out", out, "--no-report"]).status == 0)
    let history = try Data(contentsOf: URL(fileURLWithPath: out + "/history.json"))
    let r = try Self.run(["train", "Graphs/tiny.graph", "--jit", "--steps", "20", "--out", out, "--resume", "--no-report"])
    #expect(r.status == 1)
    #expect(r.stderr.contains("is at step 20, and this run (--steps 20) ends at step 20: nothing to resume"), "\(r.stderr)")
    #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/history.json")) == history)
  }

  @Test func badArgumentsAreRejectedCleanly() throws {
    for args in [["train", "Graphs/tiny.graph", "--batch", "0"], ["compile"], ["frobnicate"], ["train", "--no-such-option"],
                 ["compile", "/nonexistent.graph"], ["train", "Graphs/tiny.graph", "--backend", "gpu"],
                 ["eval", "Graphs/tiny.graph", "--weights", "/nonexistent.safetensors"],
                 ["train", "Graphs/tiny.graph", "--backend", "interp", "--data", "/nonexistent"]] {
      let r = try Self.run(args)
      #expect(Self.failedCleanly(r), "\(args): status \(r.status), \(r.stderr)")
    }
  }

  @Test func nonFiniteLossStopsTrainingNamingTheStepAndTheOp() throws {
    let out = NSTemporaryDirectory() + "cnnc-nan-\(UUID().uuidString)"
    let r = try Self.run(["train", "Graphs/tiny.graph", "--jit", "--lr", "1e30", "--steps", "50", "--check-numerics", "--out", out])
    #expect(r.status == 1)
    #expect(r.stderr.contains("the loss became"))
    #expect(r.stderr.contains("at step 2"))
    #expect(r.stderr.contains("the first non-finite value comes from 'fc1' (dense, line 11)"))
  }

  @Test func sigintSavesAResumableCheckpoint() throws {
    let out = NSTemporaryDirectory() + "cnnc-int-\(UUID().uuidString)"
    // Interrupt once training is under way (the JIT line is printed before the first step).
    let (p, pipe, started) = try Self.start(["train", "Graphs/simplecnn.graph", "--jit", "--epochs", "1", "--out", out], readingUntil: "training simplecnn")
    var seen = started
    Thread.sleep(forTimeInterval: 1)
    p.interrupt()
    seen += pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    #expect(p.terminationStatus == 130)
    #expect(String(decoding: seen, as: UTF8.self).contains("continue with --resume"))
    let files = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
    #expect(files == [".lock", "checkpoints", "history.json", "model.graph", "optimizer.safetensors", "weights.safetensors"], "no temporary files left behind")
    // Resume for five more steps than were saved.
    let text = String(decoding: seen, as: UTF8.self)
    let saved = try #require(text.components(separatedBy: "interrupted at step ").last?.prefix { $0.isNumber }).description
    let more = try #require(Int(saved)) + 5
    let resumed = try Self.run(["train", "Graphs/simplecnn.graph", "--jit", "--epochs", "1", "--out", out, "--resume", "--steps", "\(more)"])
    #expect(resumed.status == 0, "\(resumed.stderr)")
    #expect(resumed.stdout.contains("resumed from"))
  }

  @Test func predictClassifiesAPNGAndAnIDXImage() throws {
    let out = NSTemporaryDirectory() + "cnnc-pred-\(UUID().uuidString)"
    let t = try Self.run(["train", "Graphs/tiny.graph", "--jit", "--steps", "300", "--out", out])
    #expect(t.status == 0, "\(t.stderr)")
    let png = try Self.run(["predict", "Graphs/tiny.graph", "--weights", out + "/weights.safetensors", "Tests/Fixtures/seven.png"])
    #expect(png.status == 0, "\(png.stderr)")
    #expect(png.stdout.hasPrefix("prediction: 7"))
    let idx = try Self.run(["predict", "Graphs/tiny.graph", "--weights", out + "/weights.safetensors", "data/mnist/t10k-images-idx3-ubyte.gz", "--index", "1"])
    #expect(idx.stdout.hasPrefix("prediction: 2 (p = 0."), "\(idx.stdout)")
    #expect(idx.stdout.contains("), true label 2\n"), "the labels file beside the images gives the truth: \(idx.stdout)")
    let top = try Self.run(["predict", "Graphs/tiny.graph", "--weights", out + "/weights.safetensors", "Tests/Fixtures/seven.png", "--top", "3", "--logits"])
    let rows = top.stdout.split(separator: "\n").dropFirst()
    #expect(rows.count == 3 && rows.first!.hasPrefix("   7  0.") && rows.allSatisfy { $0.contains("logit ") }, "\(top.stdout)")
    let dir = NSTemporaryDirectory() + "cnnc-pngs-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    for name in ["b.png", "a.png"] { try FileManager.default.copyItem(atPath: "Tests/Fixtures/seven.png", toPath: dir + "/" + name) }
    let many = try Self.run(["predict", "Graphs/tiny.graph", "--weights", out + "/weights.safetensors", dir, "--json", "--top", "1"])
    let lines = many.stdout.split(separator: "\n").map(String.init)
    #expect(lines.count == 2 && lines[0].hasPrefix("{\"image\": \"\(dir)/a.png\", \"prediction\": 7, \"probabilities\": {\"7\": 0."), "\(many.stdout)")
    for line in lines { #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil, "\(line) is JSON") }
    let bad = try Self.run(["predict", "Graphs/tiny.graph", "--weights", out + "/weights.safetensors", "Graphs/tiny.graph"])
    #expect(bad.status == 1)
  }

  /// Help is wrapped by the terminal width only: no short line ends mid-sentence before text that continues it
  /// (a discussion written with hard line breaks used to print "... a fresh permutation per epoch with" alone).
  @Test func helpIsNotHardWrapped() throws {
    for command in [[], ["compile"], ["train"], ["eval"], ["predict"], ["bench"], ["dump-ir"], ["report"]] {
      let r = try Self.run(command + ["--help"])
      let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
      for (a, b) in zip(lines, lines.dropFirst()) where !a.isEmpty && a.count < 40 && !a.hasPrefix("-") {
        let ends = a.hasSuffix(".") || a.hasSuffix(":") || a.hasSuffix(")")
        #expect(ends || b.first?.isLowercase != true, "\(command) --help breaks a sentence: '\(a)' / '\(b)'")
      }
    }
  }

  @Test func versionNamesTheFormat() throws {
    let r = try Self.run(["--version"])
    #expect(r.status == 0 && r.stdout.hasPrefix("cnnc ") && r.stdout.contains(".graph format 1.6"), "\(r.stdout)")
  }

  @Test func dumpIRStagesPrint() throws {
    for stage in ["parsed", "shaped", "grad", "fused", "lowered", "swift", "llvm", "llvm-opt"] {
      let r = try Self.run(["dump-ir", "Graphs/tiny.graph", "--stage", stage, "--batch", "4"])
      #expect(r.status == 0, "\(stage): \(r.stderr)")
      #expect(!r.stdout.isEmpty)
    }
  }

  @Test func builtInGraphIsTheExampleFile() throws {
    let src = try String(contentsOf: Fixtures.root.appendingPathComponent("Sources/cnnc/DefaultGraph.swift"), encoding: .utf8)
    let file = try String(contentsOf: Fixtures.graphs.appendingPathComponent("simplecnn.graph"), encoding: .utf8)
    #expect(src.contains("\"\"\"\n" + file + "\"\"\""))
  }

  @Test func trainJITWithNoFileWorksFromAnyDirectory() throws {
    let out = NSTemporaryDirectory() + "cnnc-cli-\(UUID().uuidString)"
    let r = try Self.run(["train", "--jit", "--steps", "20", "--out", out], cwd: NSTemporaryDirectory())
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stdout.contains("training simplecnn with the jit back end"))
    #expect(r.stdout.contains("test acc"))
    #expect(FileManager.default.fileExists(atPath: out + "/weights.safetensors"))
    // The run directory holds the report, a self-contained page of inline SVG.
    let html = try String(contentsOf: URL(fileURLWithPath: out + "/report.html"), encoding: .utf8)
    for part in ["Loss and accuracy per epoch", "Confusion matrix", "Misclassified test images", "First conv layer: filters", "<svg"] {
      #expect(html.contains(part), "report lacks \(part)")
    }
    #expect(!html.contains("<script") && !html.contains("src=\"http"), "self-contained")
    let e = try Self.run(["eval", "Graphs/simplecnn.graph", "--weights", out + "/weights.safetensors"])
    #expect(e.status == 0, "\(e.stderr)")
    #expect(e.stdout.contains("confusion matrix"))
  }
}

/// `cnnc bench` runs its protocol and prints one JSON object with its fields (no timing is asserted).
@Suite struct BenchCommandTests {
  @Test func benchPrintsItsJSONFields() throws {
    let r = try CLITests.run(["bench", "--steps", "20", "--singles", "20"])
    #expect(r.status == 0, "\(r.stderr)")
    let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
    let object = try #require(json)
    for key in ["train_images_per_s", "compile_s", "compile_cached_s", "first_step_s", "infer_b1000_images_per_s", "infer_b1_us_per_image",
                "peak_rss_mb", "test_accuracy", "threads", "openblas_kernel", "train_gflops", "sgemm_peak_gflops",
                "train_fraction_of_sgemm_peak"] {
      #expect(object[key] != nil, "missing \(key)")
    }
    #expect((object["train_images_per_s"] as? Double ?? 0) > 0)
    #expect((object["compile_cached_s"] as? Double ?? 0) > 0)
  }
}
