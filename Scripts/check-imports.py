#!/usr/bin/env python3
"""Every module a target imports is declared in Package.swift as its dependency (imports that only resolve
through another target's dependencies work by accident of build order), and the source targets' imports run one
way down the pipeline's layers. Exits 1 naming each violation."""
import os, re, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
package = open(os.path.join(root, "Package.swift")).read()
system = {"Foundation", "FoundationEssentials", "Glibc", "Darwin", "Dispatch", "Testing", "XCTest", "ArgumentParser", "SwiftProtobuf", "Synchronization"}
products = {"ArgumentParser", "SwiftProtobuf"}
missing = []
# The layers of Sources/, lowest first: a target may import only targets of lower layers (and C modules).
layers = {"FileSystem": 0, "GraphIR": 1, "Passes": 2, "Lowering": 3, "ONNX": 3, "LLVMBackend": 4, "SwiftBackend": 4,
          "Runtime": 5, "FuzzTargets": 6, "cnnc": 6, "cnnc-fuzz": 7}
for m in re.finditer(r'\.(?:target|testTarget|executableTarget|systemLibrary)\(\s*name:\s*"([^"]+)"(.*?)\)(?=,\s*(?:\n|//|\.|\]))', package, re.S):
    name, rest = m.group(1), m.group(2)
    deps = set(re.findall(r'"([A-Za-z_]+)"', rest.split("dependencies:", 1)[1])) if "dependencies:" in rest else set()
    path = re.search(r'path:\s*"([^"]+)"', rest)
    folder = os.path.join(root, path.group(1) if path else ("Tests/" + name if "testTarget" in m.group(0) else "Sources/" + name))
    if not os.path.isdir(folder):
        continue
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if not f.endswith(".swift"):
                continue
            for imp in re.findall(r'^(?:@testable\s+)?import\s+([A-Za-z_]+)', open(os.path.join(dirpath, f)).read(), re.M):
                where = os.path.relpath(os.path.join(dirpath, f), root)
                if imp not in system and imp != name and imp not in deps:
                    missing.append(f"{name} imports {imp} ({where}) without declaring it")
                if name in layers and imp in layers and layers[imp] >= layers[name]:
                    missing.append(f"{name} imports {imp} ({where}): an arrow up or across the layers")
for line in sorted(set(missing)):
    print(line)
sys.exit(1 if missing else 0)
