// swift-tools-version:6.0
import PackageDescription

/// cnnc: a static-graph compiler for convolutional networks.
/// Targets follow the pipeline and depend one way: FileSystem <- GraphIR <- Passes <- Lowering <- back ends <- Runtime <- cnnc
/// (ONNX beside Passes).
let package = Package(
  name: "cnnc",
  platforms: [.macOS(.v13)],
  products: [
    .executable(name: "cnnc", targets: ["cnnc"]),
    // The front end under libFuzzer (`make fuzz`); without the fuzzer it replays inputs.
    .executable(name: "cnnc-fuzz", targets: ["cnnc-fuzz"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    // ONNX's protobuf messages (Sources/ONNX/Generated, made by Scripts/onnx/generate_protobuf.sh).
    .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
  ],
  targets: [
    // C modules: LLVM 19 through a header-only target (see README, "Build"), OpenBLAS and zlib as system libraries.
    .target(name: "CLLVM", linkerSettings: [.linkedLibrary("LLVM-19")]),
    .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
    .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
    // JPEG decoding: libjpeg-turbo's TurboJPEG API.
    .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG"),
    // The spin-wait hint of the thread pool's workers, and returning freed memory to the system.
    .target(name: "CSpin"),

    // Paths and checked file reads and writes, beneath everything that touches a file.
    .target(name: "FileSystem"),
    .target(name: "GraphIR", dependencies: ["FileSystem"]),
    .target(name: "Passes", dependencies: ["GraphIR"]),
    .target(name: "Lowering", dependencies: ["GraphIR", "Passes"]),
    // The back ends: lowered programs in, entry points out (`ProgramCompiler`); they know nothing of the runtime.
    .target(name: "LLVMBackend", dependencies: ["CLLVM", "FileSystem", "GraphIR", "Lowering"]),
    .target(name: "SwiftBackend", dependencies: ["FileSystem", "GraphIR", "Lowering"]),
    // Executes compiled programs: training, evaluation, data, checkpoints.
    .target(name: "Runtime", dependencies: ["FileSystem", "GraphIR", "Passes", "Lowering", "CZlib", "COpenBLAS", "CSpin", "CTurboJPEG"]),
    // A front end beside the .graph parser: ONNX models read into the .graph language.
    .target(name: "ONNX", dependencies: ["FileSystem", "GraphIR", "Passes", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
    .executableTarget(
      name: "cnnc",
      dependencies: [
        "FileSystem", "GraphIR", "Passes", "Lowering", "Runtime", "LLVMBackend", "SwiftBackend", "ONNX", "COpenBLAS",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),

    // Every reader and the whole pipeline as fuzz targets; `cnnc-fuzz` runs them under libFuzzer.
    .target(name: "FuzzTargets", dependencies: ["GraphIR", "Passes", "Lowering", "Runtime", "ONNX"]),
    .executableTarget(name: "cnnc-fuzz", dependencies: ["FuzzTargets"]),

    .target(name: "CNNCTestSupport", dependencies: ["FileSystem", "GraphIR", "Passes", "Runtime"], path: "Tests/CNNCTestSupport"),
    .testTarget(name: "GraphIRTests", dependencies: ["GraphIR", "Passes", "CNNCTestSupport"]),
    .testTarget(name: "OpsTests", dependencies: ["GraphIR", "Passes", "Runtime", "CNNCTestSupport"]),
    .testTarget(name: "PassesTests", dependencies: ["GraphIR", "Passes"]),
    .testTarget(name: "LoweringTests", dependencies: ["GraphIR", "Passes", "Lowering", "CNNCTestSupport"]),
    .testTarget(name: "FileSystemTests", dependencies: ["FileSystem"]),
    .testTarget(name: "RuntimeTests", dependencies: ["FileSystem", "GraphIR", "Passes", "Runtime", "CNNCTestSupport"]),
    .testTarget(name: "BackendTests", dependencies: ["CLLVM", "FileSystem", "GraphIR", "Passes", "Lowering", "LLVMBackend", "SwiftBackend", "Runtime", "COpenBLAS", "CNNCTestSupport"],
                exclude: ["Snapshots"]),
    .testTarget(name: "ONNXTests", dependencies: ["FileSystem", "ONNX", "GraphIR", "Passes", "Runtime", "CNNCTestSupport"]),
    .testTarget(name: "EndToEndTests", dependencies: ["CNNCTestSupport", "FileSystem", "Runtime"]),
    .testTarget(name: "FuzzTargetsTests", dependencies: ["FuzzTargets", "GraphIR", "Passes", "Runtime", "CNNCTestSupport"]),
  ]
)
