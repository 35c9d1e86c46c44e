import FileSystem
import GraphIR
import Foundation

/// A checkpoint error: missing, extra or mis-shaped tensors, or a damaged file.
public struct CheckpointError: UserFacingError {
  public var description: String
  public init(_ d: String) { description = d }
}

/// A safetensors file: named F32 tensors, I64 tensors (step counters such as `num_batches_tracked`) and
/// string metadata.
///
/// Layout: an 8-byte little-endian header length, a JSON header with sorted keys (so equal contents
/// give byte-identical files), then the tensor data back to back.
public struct SafeTensors: Equatable {
  public var tensors: [String: (shape: [Int], data: [Float])]
  public var integers: [String: (shape: [Int], data: [Int64])] = [:]
  public var metadata: [String: String]

  public init(tensors: [String: (shape: [Int], data: [Float])] = [:], metadata: [String: String] = [:]) {
    self.tensors = tensors
    self.metadata = metadata
  }

  public static func == (a: SafeTensors, b: SafeTensors) -> Bool {
    a.metadata == b.metadata && a.tensors.keys.sorted() == b.tensors.keys.sorted()
      && a.tensors.allSatisfy { k, v in b.tensors[k]!.shape == v.shape && b.tensors[k]!.data == v.data }
      && a.integers.keys.sorted() == b.integers.keys.sorted()
      && a.integers.allSatisfy { k, v in b.integers[k]!.shape == v.shape && b.integers[k]!.data == v.data }
  }

  /// A JSON string literal (quotes, backslashes and control characters escaped).
  public static func jsonString(_ s: String) -> String {
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
    let names = (Array(tensors.keys) + Array(integers.keys)).sorted()
    for name in names {
      let (dtype, shape, bytes) = tensors[name].map { ("F32", $0.shape, $0.data.count * 4) } ?? integers[name].map { ("I64", $0.shape, $0.data.count * 8) }!
      entries.append("\(Self.jsonString(name)):{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}")
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
      // Values are stored little-endian, which this (x86-64/arm64) host already is.
      if let t = tensors[name] { t.data.withUnsafeBytes { out += $0 } } else { integers[name]!.data.withUnsafeBytes { out += $0 } }
    }
    return out
  }

  /// Writes atomically: a flushed temporary file in the same directory, renamed over the target.
  public func write(to path: String) throws { try writeAtomically(serialized(), to: path) }

  /// The largest checkpoint read: 16 GiB, far above any model cnnc trains, far below what would exhaust memory
  /// for a damaged size.
  public static let maxFileBytes = 1 << 34

  public static func read(from path: String) throws -> SafeTensors {
    let bytes: [UInt8]
    do { bytes = try readRegularFile(path, maxBytes: maxFileBytes) } catch { throw CheckpointError("cannot read checkpoint: \(error)") }
    return try parse(bytes, path: path)
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
    if let dup = duplicateTopLevelKey(bytes[8..<headerEnd]) { throw bad("the header names '\(dup)' twice") }
    var extents: [(start: Int, end: Int, name: String)] = []
    for (name, value) in header where name != "__metadata__" {
      guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
            let shape = info["shape"] as? [Int], let offs = info["data_offsets"] as? [Int], offs.count == 2 else {
        throw bad("entry '\(name)' lacks dtype, shape or data_offsets")
      }
      guard dtype == "F32" || dtype == "I64" else {
        throw CheckpointError("\(path): tensor '\(name)' has dtype \(dtype); cnnc reads F32 tensors (and I64 step counters) only")
      }
      guard shape.allSatisfy({ $0 >= 0 && $0 <= 1 << 32 }), let count = ImageDataset.checkedSize(shape) else { throw bad("tensor '\(name)' has an absurd shape \(shape)") }
      let width = dtype == "F32" ? 4 : 8
      guard offs[0] >= 0, offs[1] >= offs[0], offs[1] - offs[0] == count * width else {
        throw bad("tensor '\(name)' of shape \(shape) needs \(count * width) bytes but its offsets \(offs) give \(offs[1] - offs[0])")
      }
      guard offs[1] <= bytes.count - dataStart else { throw bad("tensor '\(name)' runs past the end of the file (truncated)") }
      extents.append((offs[0], offs[1], name))
      func values<T: Numeric>(_: T.Type) -> [T] {
        var v = [T](repeating: 0, count: count)
        v.withUnsafeMutableBytes { dst in
          bytes.withUnsafeBytes { src in
            dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(dataStart + offs[0])..<(dataStart + offs[1])]))
          }
        }
        return v
      }
      if dtype == "F32" { result.tensors[name] = (shape, values(Float.self)) } else { result.integers[name] = (shape, values(Int64.self)) }
    }
    // The tensors tile the data exactly, as the format requires: no overlaps, no gaps, nothing after the last.
    var end = 0
    for e in extents.sorted(by: { ($0.start, $0.end) < ($1.start, $1.end) }) {
      guard e.start == end else {
        throw bad(e.start < end ? "tensor '\(e.name)' overlaps the tensor before it (offset \(e.start) < \(end))"
                  : "a gap of \(e.start - end) bytes before tensor '\(e.name)'")
      }
      end = e.end
    }
    guard end == bytes.count - dataStart else { throw bad("\(bytes.count - dataStart - end) bytes after the last tensor (trailing data)") }
    return result
  }

  /// The first key of the header's top-level object that appears twice (a JSON parser would keep one silently).
  static func duplicateTopLevelKey(_ header: ArraySlice<UInt8>) -> String? {
    var seen = Set<[UInt8]>()
    var depth = 0, i = header.startIndex
    var expectKey = false
    while i < header.endIndex {
      let c = header[i]
      switch c {
      case UInt8(ascii: "{"), UInt8(ascii: "["):
        depth += 1
        expectKey = depth == 1 && c == UInt8(ascii: "{")
      case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
      case UInt8(ascii: ","): expectKey = depth == 1
      case UInt8(ascii: "\""):
        var j = i + 1, text: [UInt8] = []
        while j < header.endIndex, header[j] != UInt8(ascii: "\"") {
          if header[j] == UInt8(ascii: "\\") { text.append(header[j]); j += 1 }
          if j < header.endIndex { text.append(header[j]) }
          j += 1
        }
        if expectKey {
          if !seen.insert(text).inserted { return String(decoding: text, as: UTF8.self) }
          expectKey = false
        }
        i = j
      default: break
      }
      i += 1
    }
    return nil
  }
}

extension Parameters {
  /// The parameters, buffers and counters as a `state_dict`-named safetensors file (counters are 0-d I64,
  /// as PyTorch saves `num_batches_tracked`); `stateKey` gives each one's key (`Graph.stateKey`: a node's
  /// `state` prefix, else its name).
  public func safeTensors(metadata: [String: String], stateKey: (String) -> String = { $0 }) -> SafeTensors {
    var st = SafeTensors(metadata: metadata)
    for n in names + buffers { st.tensors[stateKey(n)] = (shapes[n]!, values[n]!) }
    for (n, v) in counters { st.integers[stateKey(n)] = ([], [v]) }
    return st
  }

  /// Loads values from a checkpoint; missing, extra or mis-shaped tensors are errors naming them all. A
  /// missing counter reads as 0, as PyTorch loads a `state_dict` saved before it had `num_batches_tracked`.
  public mutating func load(_ st: SafeTensors, path: String, stateKey: (String) -> String = { $0 }) throws {
    // Every check reads the file under the keys the graph saves (`stateKey`) and names those keys: a file of the
    // nodes' own names for a node with a `state` prefix does not fit.
    var problems: [String] = []
    let floats = names + buffers
    let floatKeys = Set(floats.map(stateKey)), counterKeys = Set(counters.keys.map(stateKey))
    let missing = floats.map(stateKey).filter { st.tensors[$0] == nil }
    if !missing.isEmpty { problems.append("missing tensors: \(missing.joined(separator: ", "))") }
    let extra = (st.tensors.keys.filter { !floatKeys.contains($0) } + st.integers.keys.filter { !counterKeys.contains($0) }).sorted()
    if !extra.isEmpty { problems.append("unexpected tensors: \(extra.joined(separator: ", "))") }
    for n in floats { if let t = st.tensors[stateKey(n)], t.shape != shapes[n]! { problems.append("'\(stateKey(n))' has shape \(t.shape), the graph needs \(shapes[n]!)") } }
    for n in counters.keys { if let t = st.integers[stateKey(n)], t.data.count != 1 { problems.append("'\(stateKey(n))' has shape \(t.shape), the graph needs a scalar") } }
    guard problems.isEmpty else { throw CheckpointError("\(path) does not fit this graph: " + problems.joined(separator: "; ")) }
    for n in floats {
      if let i = st.tensors[stateKey(n)]!.data.firstIndex(where: { !$0.isFinite }) {
        throw CheckpointError("\(path): '\(stateKey(n))' holds \(st.tensors[stateKey(n)]!.data[i]) at element \(i); weights must be finite")
      }
    }
    for n in buffers where bufferDomains[n] == .nonNegative {
      if let i = st.tensors[stateKey(n)]!.data.firstIndex(where: { $0 < 0 }) {
        throw CheckpointError("\(path): '\(stateKey(n))' holds \(st.tensors[stateKey(n)]!.data[i]) at element \(i); its op defines it as never negative (a variance)")
      }
    }
    for n in floats { values[n] = st.tensors[stateKey(n)]!.data }
    for n in counters.keys { counters[n] = st.integers[stateKey(n)]?.data.first ?? 0 }
  }
}

/// The optimiser state of a checkpoint, checked against the graph's parameters and the run's optimiser.
public struct OptimizerCheckpoint {
  /// `m.NAME` and `v.NAME` (Adam) or `momentum.NAME` (SGD), each the size of its parameter.
  public var tensors: [String: [Float]]

  /// Checks kind, names, sizes and values; after the first step every parameter must have its state,
  /// since a file without it would resume from zeros silently.
  public init(_ os: SafeTensors, path o: String, parameters: Parameters, kind: Optimizer.Kind, momentum: Float, step: Int? = nil) throws {
    guard os.metadata["cnnc.optimizer"] == kind.rawValue else {
      throw CheckpointError("\(o) holds \(os.metadata["cnnc.optimizer"] ?? "no") optimiser state; this run uses \(kind.rawValue)")
    }
    let keys: [String] = switch kind {
    case .adam: ["m", "v"]
    case .sgd: momentum != 0 ? ["momentum"] : []
    }
    for (k, t) in os.tensors {
      let prefix = String(k.prefix { $0 != "." }), param = String(k.drop { $0 != "." }.dropFirst())
      guard keys.contains(prefix), let want = parameters.values[param]?.count, want == t.data.count else {
        throw CheckpointError("\(o): optimiser tensor '\(k)' does not match a parameter of this graph and optimiser")
      }
      if let i = t.data.firstIndex(where: { !$0.isFinite }) { throw CheckpointError("\(o): '\(k)' holds \(t.data[i]) at element \(i)") }
    }
    let step = step ?? os.metadata["cnnc.step"].flatMap(Int.init) ?? 0
    let missing = step == 0 ? [] : parameters.names.flatMap { p in keys.map { "\($0).\(p)" } }.filter { os.tensors[$0] == nil }
    guard missing.isEmpty else {
      throw CheckpointError("\(o) lacks the optimiser state \(missing.prefix(4).joined(separator: ", "))\(missing.count > 4 ? " and \(missing.count - 4) more" : ""); it cannot continue step \(step)")
    }
    tensors = os.tensors.mapValues(\.data)
  }
}
