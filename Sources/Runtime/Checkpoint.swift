import Foundation

/// A checkpoint error: missing, extra or mis-shaped tensors, or a damaged file.
public struct CheckpointError: Error, CustomStringConvertible {
  public var description: String
  public init(_ d: String) { description = d }
}

/// A safetensors file: named F32 tensors plus string metadata.
///
/// Layout: an 8-byte little-endian header length, a JSON header with sorted keys (so equal contents
/// give byte-identical files), then the tensor data back to back.
public struct SafeTensors: Equatable {
  public var tensors: [String: (shape: [Int], data: [Float])]
  public var metadata: [String: String]

  public init(tensors: [String: (shape: [Int], data: [Float])] = [:], metadata: [String: String] = [:]) {
    self.tensors = tensors
    self.metadata = metadata
  }

  public static func == (a: SafeTensors, b: SafeTensors) -> Bool {
    a.metadata == b.metadata && a.tensors.keys.sorted() == b.tensors.keys.sorted()
      && a.tensors.allSatisfy { k, v in b.tensors[k]!.shape == v.shape && b.tensors[k]!.data == v.data }
  }

  static func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
      switch u {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
      default: out.unicodeScalars.append(u)
      }
    }
    return out + "\""
  }

  public func serialized() -> [UInt8] {
    var entries: [String] = []
    var offset = 0
    let names = tensors.keys.sorted()
    for name in names {
      let t = tensors[name]!
      let bytes = t.data.count * 4
      entries.append("\(Self.jsonString(name)):{\"dtype\":\"F32\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}")
      offset += bytes
    }
    if !metadata.isEmpty {
      let meta = metadata.keys.sorted().map { "\(Self.jsonString($0)):\(Self.jsonString(metadata[$0]!))" }
      entries.insert("\"__metadata__\":{\(meta.joined(separator: ","))}", at: 0)
    }
    var header = Array("{\(entries.joined(separator: ","))}".utf8)
    while header.count % 8 != 0 { header.append(0x20) }  // pad with spaces so the data is 8-byte aligned
    var out = [UInt8]()
    out.reserveCapacity(8 + header.count + offset)
    withUnsafeBytes(of: UInt64(header.count).littleEndian) { out += $0 }
    out += header
    for name in names {
      tensors[name]!.data.withUnsafeBytes { raw in
        // Floats are stored little-endian, which this (x86-64/arm64) host already is.
        out += raw
      }
    }
    return out
  }

  /// Writes atomically: a temporary file in the same directory, flushed, then renamed over the target.
  public func write(to path: String) throws {
    let url = URL(fileURLWithPath: path)
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
    let bytes = serialized()
    guard FileManager.default.createFile(atPath: tmp.path, contents: nil) else {
      throw CheckpointError("cannot create \(tmp.path)")
    }
    let h = try FileHandle(forWritingTo: tmp)
    do {
      try h.write(contentsOf: Data(bytes))
      try h.synchronize()
      try h.close()
    } catch {
      try? FileManager.default.removeItem(at: tmp)
      throw error
    }
    guard rename(tmp.path, url.path) == 0 else {
      try? FileManager.default.removeItem(at: tmp)
      throw CheckpointError("cannot rename \(tmp.path) to \(path): \(String(cString: strerror(errno)))")
    }
  }

  public static func read(from path: String) throws -> SafeTensors {
    guard let data = FileManager.default.contents(atPath: path) else { throw CheckpointError("cannot read checkpoint '\(path)'") }
    return try parse([UInt8](data), path: path)
  }

  public static func parse(_ bytes: [UInt8], path: String) throws -> SafeTensors {
    func bad(_ m: String) -> CheckpointError { CheckpointError("\(path): not a valid safetensors file: \(m)") }
    guard bytes.count >= 8 else { throw bad("only \(bytes.count) bytes (truncated)") }
    let n = bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    guard n <= UInt64(bytes.count - 8), n <= 100_000_000 else { throw bad("header length \(n) exceeds the file (truncated or damaged)") }
    let headerEnd = 8 + Int(n)
    guard let json = try? JSONSerialization.jsonObject(with: Data(bytes[8..<headerEnd])), let header = json as? [String: Any] else {
      throw bad("the header is not a JSON object")
    }
    let dataStart = headerEnd
    var result = SafeTensors()
    if let meta = header["__metadata__"] {
      guard let m = meta as? [String: String] else { throw bad("__metadata__ must map strings to strings") }
      result.metadata = m
    }
    for (name, value) in header where name != "__metadata__" {
      guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
            let shape = info["shape"] as? [Int], let offs = info["data_offsets"] as? [Int], offs.count == 2 else {
        throw bad("entry '\(name)' lacks dtype, shape or data_offsets")
      }
      guard dtype == "F32" else { throw CheckpointError("\(path): tensor '\(name)' has dtype \(dtype); cnnc reads F32 tensors only") }
      guard shape.allSatisfy({ $0 >= 0 && $0 <= 1 << 32 }), let count = IDXDataset.checkedSize(shape) else { throw bad("tensor '\(name)' has an absurd shape \(shape)") }
      guard offs[0] >= 0, offs[1] >= offs[0], offs[1] - offs[0] == count * 4 else {
        throw bad("tensor '\(name)' of shape \(shape) needs \(count * 4) bytes but its offsets \(offs) give \(offs[1] - offs[0])")
      }
      guard dataStart + offs[1] <= bytes.count else { throw bad("tensor '\(name)' runs past the end of the file (truncated)") }
      var floats = [Float](repeating: 0, count: count)
      floats.withUnsafeMutableBytes { dst in
        bytes.withUnsafeBytes { src in
          dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(dataStart + offs[0])..<(dataStart + offs[1])]))
        }
      }
      result.tensors[name] = (shape, floats)
    }
    return result
  }
}

extension Parameters {
  /// The parameters as a `state_dict`-named safetensors file.
  public func safeTensors(metadata: [String: String]) -> SafeTensors {
    var st = SafeTensors(metadata: metadata)
    for n in names { st.tensors[n] = (shapes[n]!, values[n]!) }
    return st
  }

  /// Loads values from a checkpoint; missing, extra or mis-shaped tensors are errors naming them all.
  public mutating func load(_ st: SafeTensors, path: String) throws {
    var problems: [String] = []
    let missing = names.filter { st.tensors[$0] == nil }
    if !missing.isEmpty { problems.append("missing tensors: \(missing.joined(separator: ", "))") }
    let extra = st.tensors.keys.filter { shapes[$0] == nil }.sorted()
    if !extra.isEmpty { problems.append("unexpected tensors: \(extra.joined(separator: ", "))") }
    for n in names { if let t = st.tensors[n], t.shape != shapes[n]! { problems.append("'\(n)' has shape \(t.shape), the graph needs \(shapes[n]!)") } }
    guard problems.isEmpty else { throw CheckpointError("\(path) does not fit this graph: " + problems.joined(separator: "; ")) }
    for n in names { values[n] = st.tensors[n]!.data }
  }
}
