import CNNCTestSupport
import FileSystem
import Foundation
import Runtime
import Testing

/// What the second reliability probe found, each as the run that showed it: one clear error, the right answer,
/// or a refusal, never a trap, a hang, a dump or lost work.
@Suite(.serialized) struct CLIReliabilityTests {
  /// A scratch directory with small IDX data (`small/`) and the tiny graph, as the working directory of the runs.
  static func scratch() throws -> String {
    let dir = try makeTemporaryDirectory(prefix: "cnnc-reliability")
    try makeDirectory(Path.join(dir, "small"))
    try SmallIDX.write(to: Path.join(dir, "small"), train: 192, test: 32)
    try FileManager.default.copyItem(atPath: Fixtures.graphs.appendingPathComponent("tiny.graph").path, toPath: Path.join(dir, "tiny.graph"))
    return dir
  }

  static func run(_ args: [String], in dir: String) throws -> CLITests.Result { try CLITests.run(args, cwd: dir) }

  static func train(_ dir: String, _ extra: [String]) throws -> CLITests.Result {
    try run(["train", "tiny.graph", "--jit", "--data", "small", "--no-report"] + extra, in: dir)
  }

  @Test func oneCharacterOutputPathsWork() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let t = try Self.train(dir, ["--steps", "2", "--out", "r"])
    #expect(t.status == 0, "\(t.stderr)")
    #expect(FileManager.default.fileExists(atPath: Path.join(dir, "r/weights.safetensors")))
    for args in [["compile", "tiny.graph", "--emit", "llvm", "-o", "x"], ["export", "tiny.graph", "--weights", "r/weights.safetensors", "-o", "e"]] {
      let r = try Self.run(args, in: dir)
      #expect(r.status == 0 && !r.trapped, "\(args): \(r.stderr)")
      #expect(FileManager.default.fileExists(atPath: Path.join(dir, args.last!)), "\(args)")
    }
    let i = try Self.run(["import", "e", "-o", "g", "--weights-out", "w"], in: dir)
    #expect(i.status == 0, "\(i.stderr)")
    #expect(FileManager.default.fileExists(atPath: Path.join(dir, "g")) && FileManager.default.fileExists(atPath: Path.join(dir, "w")))
  }

  @Test func directoryNamesAsOutputFilesAreRefusedWithoutWriting() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try makeDirectory(Path.join(dir, "out"))
    _ = try Self.train(dir, ["--steps", "1", "--out", "run"])
    for args in [["compile", "tiny.graph", "--emit", "llvm", "-o", "out/"], ["compile", "tiny.graph", "--emit", "llvm", "-o", "out"],
                 ["export", "tiny.graph", "--weights", "run/weights.safetensors", "-o", "out/"], ["compile", "tiny.graph", "--emit", "swift", "-o", "new/"]] {
      let r = try Self.run(args, in: dir)
      #expect(CLITests.failedCleanly(r) && r.stderr.contains("names a directory"), "\(args): \(r.stderr)")
    }
    #expect(try FileManager.default.contentsOfDirectory(atPath: Path.join(dir, "out")).isEmpty)
    #expect(!FileManager.default.fileExists(atPath: Path.join(dir, "new")))
  }

  @Test func absurdNumbersAndDashedValuesNameTheRule() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let cases: [([String], String)] = [
      (["train", "tiny.graph", "--threads", "9223372036854775807"], "--threads must be from 1 to 256"),
      (["train", "tiny.graph", "--threads", "50000"], "--threads must be from 1 to 256"),
      (["bench", "tiny.graph", "--threads", "0"], "--threads must be from 1 to 256"),
      (["train", "tiny.graph", "--batch", "-1"], "--batch must be at least 1, got -1"),
      (["train", "tiny.graph", "--seed", "-1"], "'-1' is invalid for '--seed"),
      (["bench", "tiny.graph", "--seed", "-1"], "'-1' is invalid for '--seed"),
      (["bench", "tiny.graph", "--shards", "0"], "--shards must divide"),
      (["bench", "tiny.graph", "--singles", "9223372036854775807"], "--singles must be at most"),
      (["bench", "tiny.graph", "--inference-only", "--batches", "0"], "--batches takes batch sizes from 1 to 1024"),
      (["bench", "tiny.graph", "--inference-only", "--batches", "1,x"], "--batches takes batch sizes from 1 to 1024"),
      (["bench", "tiny.graph", "--inference-only", "--seconds", "0"], "--seconds must be above 0"),
      (["bench", "tiny.graph", "--inference-only", "--seconds", "nan"], "--seconds must be above 0"),
    ]
    for (args, expected) in cases {
      let r = try Self.run(args, in: dir)
      #expect(r.status == 64 && r.stderr.contains(expected) && !r.stderr.contains("Missing value"), "\(args): \(r.stderr)")
    }
    // A feature list that starts with a minus is a value, not an unknown option.
    let f = try Self.run(["compile", "tiny.graph", "--cpu", "x86-64-v4", "--features", "-avx512f"], in: dir)
    #expect(f.status == 0, "\(f.stderr)")
    let sse = try Self.run(["compile", "tiny.graph", "--features=-sse", "--emit", "obj", "-o", "t.o"], in: dir)
    #expect(CLITests.failedCleanly(sse) && sse.stderr.contains("--features -sse: every x86-64 CPU has sse"), "\(sse.stderr)")
  }

  @Test func targetsThatCannotRunHereAreRefusedForRunning() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    for triple in ["x86_64-pc-windows-msvc", "x86_64-w64-windows-gnu", "x86_64-apple-macosx14"] {
      let r = try Self.train(dir, ["--steps", "1", "--target", triple, "--out", "w"])
      #expect(CLITests.failedCleanly(r) && r.stderr.contains("cannot run on this"), "\(triple): \(r.stderr)")
    }
    // Writing an object for one is still fine.
    let o = try Self.run(["compile", "tiny.graph", "--target", "x86_64-pc-windows-msvc", "--emit", "obj", "-o", "t.obj"], in: dir)
    #expect(o.status == 0, "\(o.stderr)")
  }

  @Test func aUsedOutputDirectoryNeedsResumeOrOverwrite() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(try Self.train(dir, ["--steps", "2", "--out", "run"]).status == 0)
    let again = try Self.train(dir, ["--steps", "3", "--out", "run"])
    #expect(CLITests.failedCleanly(again) && again.stderr.contains("holds a run (checkpoint of step 2)"), "\(again.stderr)")
    // The refusal left the run as it was; --resume continues it, --overwrite replaces it.
    let resumed = try Self.train(dir, ["--steps", "3", "--out", "run", "--resume"])
    #expect(resumed.status == 0 && resumed.stdout.contains("resumed from run at step 2"), "\(resumed.stderr)")
    let fresh = try Self.train(dir, ["--steps", "1", "--out", "run", "--overwrite"])
    #expect(fresh.status == 0, "\(fresh.stderr)")
    #expect(RunDirectory(Path.join(dir, "run")).checkpointSteps() == [1])
  }

  @Test func resumingWithAnotherBatchOrDataIsRefused() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(try Self.train(dir, ["--steps", "2", "--out", "run", "--batch", "32"]).status == 0)
    let batch = try Self.train(dir, ["--steps", "4", "--out", "run", "--resume", "--batch", "64"])
    #expect(CLITests.failedCleanly(batch) && batch.stderr.contains("was trained with --batch 32"), "\(batch.stderr)")
    try makeDirectory(Path.join(dir, "other"))
    try SmallIDX.write(to: Path.join(dir, "other"), train: 160, test: 32)
    let data = try Self.run(["train", "tiny.graph", "--jit", "--data", "other", "--no-report", "--steps", "4", "--out", "run", "--resume", "--batch", "32"], in: dir)
    #expect(CLITests.failedCleanly(data) && data.stderr.contains("was trained on other training data"), "\(data.stderr)")
  }

  @Test func aRefusedResumeLeavesTheRunDirectoryAsItWas() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(try Self.train(dir, ["--steps", "2", "--out", "run"]).status == 0)
    let before = try readRegularFile(Path.join(dir, "run/model.graph"), maxBytes: 1 << 20)
    // Another graph whose parameters have the tiny graph's names and other shapes.
    let other = String(decoding: before, as: UTF8.self).replacingOccurrences(of: "filters: 4", with: "filters: 6")
    #expect(other != String(decoding: before, as: UTF8.self))
    try writeAtomically(Array(other.utf8), to: Path.join(dir, "other.graph"))
    let r = try Self.run(["train", "other.graph", "--jit", "--data", "small", "--no-report", "--steps", "4", "--out", "run", "--resume"], in: dir)
    #expect(CLITests.failedCleanly(r), "\(r.stderr)")
    #expect(try readRegularFile(Path.join(dir, "run/model.graph"), maxBytes: 1 << 20) == before)
    #expect(try Self.run(["report", "run", "--data", "small"], in: dir).status == 0)
  }

  @Test func aDivergedRunKeepsItsCheckpointAndHistory() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let r = try Self.train(dir, ["--steps", "1", "--out", "run", "--lr", "3e38"])
    #expect(!r.trapped && !r.stderr.contains("EncodingError"), "\(r.stderr)")
    let history = String(decoding: try readRegularFile(Path.join(dir, "run/history.json"), maxBytes: 1 << 20), as: UTF8.self)
    #expect(history.contains("\"nan\"") || history.contains("\"inf\""), "\(history)")
    #expect(RunDirectory(Path.join(dir, "run")).checkpointSteps() == [1])
    // Its history reads back: a report draws it, eval and predict say the output is not finite.
    let eval = try Self.run(["eval", "tiny.graph", "--weights", "run/weights.safetensors", "--data", "small"], in: dir)
    #expect(!eval.trapped && [0, 1].contains(eval.status), "\(eval.stderr)")
  }

  @Test func reportRefusesADamagedHistoryAndLabelsPastTheClasses() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(try Self.train(dir, ["--steps", "2", "--out", "run"]).status == 0)
    #expect(try Self.run(["report", "run", "--data", "small"], in: dir).status == 0)
    // Labels up to 11 for a ten-class graph.
    try makeDirectory(Path.join(dir, "wide"))
    try SmallIDX.write(to: Path.join(dir, "wide"), train: 192, test: 32, classes: 12)
    let wide = try Self.run(["report", "run", "--data", "wide"], in: dir)
    #expect(CLITests.failedCleanly(wide) && wide.stderr.contains("is out of range: the graph has 10 classes"), "\(wide.stderr)")
    let bench = try Self.run(["bench", "tiny.graph", "--data", "wide", "--steps", "2", "--singles", "5"], in: dir)
    #expect(CLITests.failedCleanly(bench) && bench.stderr.contains("is out of range"), "\(bench.stderr)")
    try makeDirectory(Path.join(dir, "few"))
    try SmallIDX.write(to: Path.join(dir, "few"), train: 100, test: 8)
    let few = try Self.run(["bench", "tiny.graph", "--data", "few", "--steps", "2", "--singles", "5"], in: dir)
    #expect(CLITests.failedCleanly(few) && few.stderr.contains("needs at least 128 training images"), "\(few.stderr)")
    try writeAtomically(Array("[{\"epoch\": ".utf8), to: Path.join(dir, "run/history.json"))
    let damaged = try Self.run(["report", "run", "--data", "small"], in: dir)
    #expect(CLITests.failedCleanly(damaged) && damaged.stderr.contains("history.json is not a training history"), "\(damaged.stderr)")
  }

  @Test func predictRefusesNonFiniteOutputsAndNormalisationOfOtherChannels() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(try Self.train(dir, ["--steps", "2", "--out", "run"]).status == 0)
    try FileManager.default.copyItem(atPath: Fixtures.root.appendingPathComponent("Tests/Fixtures/seven.png").path, toPath: Path.join(dir, "seven.png"))
    var st = try SafeTensors.read(from: Path.join(dir, "run/weights.safetensors"))
    // Weights at the edge of Float's range overflow the logits to infinity and NaN.
    var huge = st
    for (k, v) in huge.tensors { huge.tensors[k] = (v.shape, v.data.map { _ in 3e38 }) }
    try huge.write(to: Path.join(dir, "huge.safetensors"))
    for extra in [[], ["--json"], ["--backend", "jit"]] {
      let r = try Self.run(["predict", "tiny.graph", "--weights", "huge.safetensors", "seven.png"] + extra, in: dir)
      #expect(CLITests.failedCleanly(r) && r.stderr.contains("is not finite"), "\(extra): \(r.stderr)")
      #expect(!r.stdout.contains("nan"), "\(r.stdout)")
    }
    let eval = try Self.run(["eval", "tiny.graph", "--weights", "huge.safetensors", "--data", "small"], in: dir)
    #expect(eval.status == 0 && eval.stderr.contains("warning: the network's output is not finite"), "\(eval.stderr)")
    // A checkpoint that records a normalisation of two channels, for a grey graph.
    st.metadata = st.metadata.merging(Normalization(means: [0.1, 0.2], stds: [0.3, 0.3]).metadata) { $1 }
    try st.write(to: Path.join(dir, "two.safetensors"))
    let two = try Self.run(["predict", "tiny.graph", "--weights", "two.safetensors", "seven.png"], in: dir)
    #expect(CLITests.failedCleanly(two), "\(two.stderr)")
  }

  @Test func aPlantedLockLinkIsNotFollowed() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try makeDirectory(Path.join(dir, "run"))
    try writeAtomically(Array("precious\n".utf8), to: Path.join(dir, "victim"))
    #expect(symlink(Path.join(dir, "victim"), Path.join(dir, "run/.lock")) == 0)
    let r = try Self.train(dir, ["--steps", "1", "--out", "run"])
    #expect(CLITests.failedCleanly(r) && r.stderr.contains(".lock is a symbolic link"), "\(r.stderr)")
    #expect(try readRegularFile(Path.join(dir, "victim"), maxBytes: 100) == Array("precious\n".utf8))
  }

  /// A classifier of many classes gets its most frequent confusions, not a matrix of thousands of lines.
  @Test func evalOfManyClassesListsTheTopConfusions() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try makeDirectory(Path.join(dir, "wide"))
    try SmallIDX.write(to: Path.join(dir, "wide"), train: 192, test: 50, classes: 25)
    let wide = String(decoding: try readRegularFile(Path.join(dir, "tiny.graph"), maxBytes: 1 << 20), as: UTF8.self)
      .replacingOccurrences(of: "units: 10", with: "units: 25")
    try writeAtomically(Array(wide.utf8), to: Path.join(dir, "wide.graph"))
    #expect(try Self.run(["train", "wide.graph", "--jit", "--data", "wide", "--no-report", "--steps", "2", "--out", "run"], in: dir).status == 0)
    let auto = try Self.run(["eval", "wide.graph", "--weights", "run/weights.safetensors", "--data", "wide"], in: dir)
    #expect(auto.status == 0 && auto.stdout.contains("most frequent confusions of 25 classes"), "\(auto.stdout)")
    #expect(auto.stdout.split(separator: "\n").count < 40)
    let full = try Self.run(["eval", "wide.graph", "--weights", "run/weights.safetensors", "--data", "wide", "--confusion", "full"], in: dir)
    #expect(full.status == 0 && full.stdout.contains("confusion matrix (rows: true label"), "\(full.stdout)")
  }

  /// `cnnc infer` runs a model on a .npy batch as an ONNX runtime would (no normalisation), on either back end,
  /// and refuses arrays of another dtype, rank or image size by name.
  @Test func inferTakesAndWritesNumPyArrays() throws {
    let dir = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(try Self.train(dir, ["--steps", "2", "--out", "run"]).status == 0)
    let images = NPYArray(shape: [5, 1, 28, 28], values: (0..<(5 * 784)).map { Float(($0 * 37) % 255) / 255 - 0.4 })
    try writeAtomically(images.serialized(), to: Path.join(dir, "x.npy"))
    var outputs: [NPYArray] = []
    for backend in ["jit", "interp"] {
      let r = try Self.run(["infer", "tiny.graph", "--weights", "run/weights.safetensors", "--input", "x.npy", "-o", "y-\(backend).npy",
                            "--backend", backend, "--batch", "2"], in: dir)
      #expect(r.status == 0, "\(r.stderr)")
      outputs.append(try NPYArray.read(Path.join(dir, "y-\(backend).npy")))
    }
    #expect(outputs[0].shape == [5, 10])
    expectClose(outputs[0].values, outputs[1].values, rtol: 1e-4, atol: 1e-5, "jit and interpreter logits")
    for (array, expected) in [(NPYArray(shape: [5, 784], values: images.values), "the model takes [N, 1, 28, 28]"),
                              (NPYArray(shape: [2, 1, 14, 14], values: [Float](repeating: 0, count: 392)), "of shape [2, 1, 14, 14]"),
                              (NPYArray(shape: [0, 1, 28, 28], values: []), "holds no images")] {
      try writeAtomically(array.serialized(), to: Path.join(dir, "bad.npy"))
      let r = try Self.run(["infer", "tiny.graph", "--weights", "run/weights.safetensors", "--input", "bad.npy", "-o", "z.npy"], in: dir)
      #expect(CLITests.failedCleanly(r) && r.stderr.contains(expected), "\(r.stderr)")
    }
    try writeAtomically(Array("not an array".utf8), to: Path.join(dir, "bad.npy"))
    let garbage = try Self.run(["infer", "tiny.graph", "--weights", "run/weights.safetensors", "--input", "bad.npy", "-o", "z.npy"], in: dir)
    #expect(CLITests.failedCleanly(garbage) && garbage.stderr.contains("not a float32 .npy array"), "\(garbage.stderr)")
  }
}
