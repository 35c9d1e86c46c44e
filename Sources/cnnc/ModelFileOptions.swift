import ArgumentParser

/// How a command reads a model file: `--verbose` lists every layer an ONNX import renamed.
struct ModelFileOptions: ParsableArguments {
  @Flag(help: "List each layer of an ONNX model whose name was made a .graph identifier (else one line counts them).")
  var verbose = false
}
