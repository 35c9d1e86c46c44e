#!/bin/sh
# Regenerates Sources/ONNX/Generated/onnx.pb.swift, the ONNX protobuf messages (checked in: building the
# Swift protobuf plugin takes minutes, so neither CI nor `make` runs this). Needs protoc (Debian's
# protobuf-compiler), onnx from PyPI (for onnx.proto; here 1.23.2) and protoc-gen-swift built from the
# swift-protobuf version Package.swift names (1.39.0):
#   git clone https://github.com/apple/swift-protobuf && cd swift-protobuf && git checkout 1.39.0 &&
#   swift build -c release --product protoc-gen-swift
# usage: Scripts/onnx/generate_protobuf.sh PATH/TO/protoc-gen-swift PYTHON_WITH_ONNX
set -eu
plugin=$1
proto_dir=$("$2" -c 'import os, onnx; print(os.path.dirname(onnx.__file__))')
protoc --plugin=protoc-gen-swift="$plugin" --swift_out=Sources/ONNX/Generated -I "$proto_dir" "$proto_dir/onnx.proto"
