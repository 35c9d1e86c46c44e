import CNNCTestSupport
import GraphIR
import ONNX
import Passes
import Runtime
import Testing

/// Every forward op's ONNX form (`ForwardOp.onnx`) is written by the export and read back by the import with the
/// same outputs, so an op whose import or export is missing fails here, not in a user's hands.
struct OpFormTests {
  /// A small graph per forward op (by its `.graph` name) that uses it; each ends in `d`, [N, classes] logits.
  static let bodies: [String: String] = [
    "conv2d": """
      y = conv2d(x, filters: 3, kernel: 3, stride: 2, padding: 1)
      z = conv2d(x, filters: 4, kernel: 3, padding: 2, groups: 2, dilation: 2, bias: false)
      v = conv2d(z, filters: 4, kernel: 5, stride: 2, padding: 2, groups: 4)
      fy = flatten(y)
      fv = flatten(v)
      dy = dense(fy, units: 4)
      dv = dense(fv, units: 4)
      d = add(dy, dv)
      """,
    "relu": "y = relu(x)\nf = flatten(y)\nd = dense(f, units: 4)",
    "leaky_relu": "y = leaky_relu(x, slope: -0.5)\nf = flatten(y)\nd = dense(f, units: 4)",
    "sigmoid": "y = sigmoid(x)\nf = flatten(y)\nd = dense(f, units: 4)",
    "tanh": "y = tanh(x)\nf = flatten(y)\nd = dense(f, units: 4)",
    "maxpool": "y = maxpool(x, size: 2)\nz = maxpool(y, size: 3, stride: 2, padding: 1, ceil_mode: true)\nf = flatten(z)\nd = dense(f, units: 4)",
    "avgpool": """
      y = avgpool(x, size: 3, stride: 2)
      z = avgpool(x, size: 3, stride: 2, padding: 1, ceil_mode: true)
      v = avgpool(x, size: 3, stride: 2, padding: 1, count_include_pad: false)
      fy = flatten(y)
      fz = flatten(z)
      fv = flatten(v)
      dy = dense(fy, units: 4)
      dz = dense(fz, units: 4)
      dv = dense(fv, units: 4)
      a = add(dy, dz)
      d = add(a, dv)
      """,
    "clip": "y = clip(x, min: 0.0, max: 0.25)\nf = flatten(y)\nd = dense(f, units: 4)",
    "hardsigmoid": "y = hardsigmoid(x)\nf = flatten(y)\nd = dense(f, units: 4)",
    "hardswish": "y = hardswish(x)\nf = flatten(y)\nd = dense(f, units: 4)",
    "silu": "y = silu(x)\nf = flatten(y)\nd = dense(f, units: 4)",
    "concat": "a = relu(x)\nc = concat(x, a, x)\nf = flatten(c)\nd = dense(f, units: 4)",
    "mul": "g = global_avgpool(x)\ns = sigmoid(g)\ny = mul(x, s)\nz = mul(s, y)\nv = mul(z, x)\nf = flatten(v)\nd = dense(f, units: 4)",
    "global_avgpool": "y = global_avgpool(x)\nf = flatten(y)\nd = dense(f, units: 4)",
    "flatten": "f = flatten(x)\nd = dense(f, units: 4)",
    "dense": "f = flatten(x)\nh = dense(f, units: 5, bias: false)\nd = dense(h, units: 4)",
    "dropout": "y = dropout(x, rate: 0.5)\nf = flatten(y)\nd = dense(f, units: 4)",
    "softmax": "f = flatten(x)\ns = dense(f, units: 4)\np = softmax(s)\nd = dense(p, units: 3)",
    "add": "a = relu(x)\ny = add(x, a)\ng = global_avgpool(x)\nz = add(g, y)\nv = add(z, g)\nf = flatten(v)\nd = dense(f, units: 4)",
    "gelu": "y = gelu(x)\nf = flatten(y)\nd = dense(f, units: 4)",
    "chunk": "a = chunk(x, chunks: 2, index: 1)\nb = chunk(x, chunks: 2, index: 0)\nr = relu(a)\nc = concat(r, b)\nf = flatten(c)\nd = dense(f, units: 4)",
    "channel_shuffle": "y = conv2d(x, filters: 6, kernel: 3)\ns = channel_shuffle(y, groups: 3)\nf = flatten(s)\nd = dense(f, units: 4)",
    "batchnorm": "y = batchnorm(x)\nz = batchnorm(y, affine: false, eps: 0.001)\nf = flatten(z)\nd = dense(f, units: 4)",
  ]
  /// Forward ops with no ONNX form, and why (the form itself says so too).
  static let withoutForm: Set = ["cross_entropy"]

  static func graph(_ body: String) throws -> Graph {
    try Parser.parse("""
      graph t
      input x: f32[N, 2, 8, 8]
      input label: i32[N]
      \(body)
      loss = cross_entropy(d, label)
      output d
      minimize loss
      """, defaultName: "t")
  }

  @Test func everyForwardOpHasAFormOrSaysWhyNot() throws {
    var forward: [String] = []
    for definition in Op.definitions where definition is any ForwardOp.Type { forward.append(definition.syntax.name) }
    #expect(Set(forward) == Set(Self.bodies.keys).union(Self.withoutForm), "a forward op without a round-trip graph here, or a stale one")
    let form = Self.form(of: .crossEntropy)
    #expect(form.map { if case .none(let reason) = $0 { !reason.isEmpty } else { false } } == true, "cross_entropy says why it has no form")
  }

  /// The ONNX form of a forward op.
  static func form(of op: Op) -> ONNXForm? {
    let definition = op.definition
    guard let forward = definition as? any ForwardOp else { return nil }
    return forward.onnx
  }

  @Test(arguments: bodies.keys.sorted()) func formRoundTrips(_ op: String) throws {
    let g = try Self.graph(Self.bodies[op]!)
    #expect(g.nodes.contains { $0.op.spelling == op })
    let shapes = try inferShapes(g, batch: 1)
    var p = Parameters(graph: g, shapes: shapes, seed: 3)
    // Running statistics away from 0 and 1, so that they matter.
    for b in g.bufferNames { p.values[b] = p.values[b]!.indices.map { 0.5 + 0.01 * Float($0 % 50) } }
    let tensors = Dictionary(uniqueKeysWithValues: (g.parameterNames + g.bufferNames).map { ($0, (shape: p.shapes[$0]!, data: p.values[$0]!)) })
    let data = try ONNXExport.serialize(g, inputDims: [2, 8, 8], outputDims: Array(shapes[g.output!]!.dims.dropFirst()), tensors: tensors,
                                        producerVersion: "test")
    let m = try ONNXImport.translate(data, path: "\(op).onnx")
    // Dropout is exported for inference, as Identity, and comes back as nothing; every other op comes back as itself.
    #expect(op == "dropout" || m.graph.nodes.contains { $0.op.spelling == op }, "\(m.text)")
    let original = try ImportTests.infer(g, p.tensors(), batch: 2)
    let back = try ImportTests.infer(m.graph, m.tensors.mapValues { Tensor<Float>(shape: $0.shape, data: $0.data) }, batch: 2)
    #expect(original.count == back.count && zip(original, back).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($0)) }, "\(original) vs \(back)")
  }

  /// Every op written as one standard node reads that node type back (dropout, written as Identity for inference,
  /// reads Dropout); no node type is read by two ops; an op without a form has no reading either, and says why.
  @Test func everyWrittenNodeTypeIsRead() throws {
    var readers: [String: [String]] = [:]
    for case let definition as any ForwardOp.Type in Op.definitions {
      let name = definition.syntax.name
      switch definition.onnxReading {
      case .node(let types, _): for t in types { readers[t, default: []].append(name) }
      case .pattern(let p): #expect(!p.isEmpty)
      case .none(let reason): #expect(Self.withoutForm.contains(name) && !reason.isEmpty, "\(name) reads no ONNX")
      }
    }
    #expect(readers.values.allSatisfy { $0.count == 1 }, "\(readers.filter { $0.value.count > 1 })")
    for (name, body) in Self.bodies {
      let g = try Self.graph(body)
      for node in g.nodes where node.op.spelling == name {
        guard case .node(let type, _, _)? = Self.form(of: node.op) else { continue }
        #expect(readers[type] == [name] || (name, type) == ("dropout", "Identity"), "\(name) is written as \(type), which it does not read")
      }
    }
    #expect(ONNXImport.supported.contains("Conv") && ONNXImport.supported.contains { $0.hasSuffix("(silu)") })
  }

  /// The export refuses what has no form with the op's reason.
  @Test func aLossIsNotExported() throws {
    var g = try Self.graph("f = flatten(x)\nd = dense(f, units: 4)")
    g.output = "loss"
    let t = try inferShapes(g, batch: 1)
    var p = Parameters(graph: g, shapes: t, seed: 3)
    p.values = p.values.mapValues { $0 }
    let tensors = Dictionary(uniqueKeysWithValues: g.parameterNames.map { ($0, (shape: p.shapes[$0]!, data: p.values[$0]!)) })
    #expect {
      _ = try ONNXExport.serialize(g, inputDims: [2, 8, 8], outputDims: [], tensors: tensors, producerVersion: "test")
    } throws: { "\($0)".contains("'loss' (cross_entropy) has no ONNX form: the loss") }
  }
}
