import GraphIR
import Lowering
import CNNCTestSupport
import Foundation
import Testing

/// The values inference programs keep channels-last (`chooseChannelsLast`).
@Suite struct LayoutsTests {
  static let targets = [Target.named("x86-64-v3", isa: .avx2), Target.named("x86-64-v4", isa: .avx512)]

  /// `Tests/Fixtures/channels_last.graph`.
  static func fixture() throws -> String {
    try String(contentsOf: Fixtures.root.appendingPathComponent("Tests/Fixtures/channels_last.graph"), encoding: .utf8)
  }

  static func program(_ source: String, batch: Int = 1, target: Target) throws -> Program {
    try lower(try Parser.parse(source, defaultName: "g"), batch: batch, mode: .infer, target: target)
  }

  /// Every value between the stem and the last global pool of inverted-residual blocks: the stem writes
  /// channels-last from its NCHW input, the gate's 1x1 values are neutral, and nothing else is.
  @Test(arguments: targets) func invertedResidualBlocksRunChannelsLast(_ target: Target) throws {
    let source = try Self.fixture()
    for batch in [1, 3] {
      let p = try Self.program(source, batch: batch, target: target)
      // The stem's clip, the squeeze convs and the 1x1 residual conv are fused away or neutral.
      #expect(p.channelsLast == ["s", "d", "p", "e", "dd", "m", "q", "e2"], "batch \(batch): \(p.channelsLast)")
      // The transposed weights are prepared once per set of weights, not on every call.
      #expect(p.listing.contains("if 0x0 >= step"))
    }
  }

  /// A residual network runs channels-last up to its global pool from its first conv whose columns are deep
  /// enough (`leastColumnDepth`): ResNet-8's 3x3 stem on 3 channels (27 floats) stays NCHW, and with it the first
  /// stage, whose residual sums read the stem's value; the second stage's strided conv and projection read that
  /// NCHW value and write channels-last, and the rest follows.
  @Test(arguments: targets) func residualNetworksRunChannelsLast(_ target: Target) throws {
    let source = try String(contentsOf: Fixtures.graphs.appendingPathComponent("resnet8.graph"), encoding: .utf8)
    #expect(try Self.program(source, target: target).channelsLast == ["s2_conv1", "s2_proj", "s2_conv2", "s3_conv1", "s3_proj", "s3_conv2"])
  }

  /// A depthwise conv whose value a kernel without a channels-last form reads (a flatten), or that reads the
  /// graph's input, stays NCHW, and so does everything joined to it; the graph's output is never channels-last.
  @Test(arguments: targets) func groupsWithAPlanarReaderStayNCHW(_ target: Target) throws {
    let pooled = """
      input x: f32[N, 3, 16, 16]
      input y: i32[N]
      a = conv2d(x, filters: 16, kernel: 1)
      d = conv2d(a, filters: 16, kernel: 3, padding: 1, groups: 16)
      f = flatten(d)
      o = dense(f, units: 3)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """
    #expect(try Self.program(pooled, target: target).channelsLast.isEmpty)
    let direct = """
      input x: f32[N, 16, 16, 16]
      input y: i32[N]
      d = conv2d(x, filters: 16, kernel: 3, padding: 1, groups: 16)
      output d
      """
    #expect(try Self.program(direct, target: target).channelsLast.isEmpty)
    let split = """
      input x: f32[N, 3, 16, 16]
      input y: i32[N]
      a = conv2d(x, filters: 16, kernel: 1)
      d = conv2d(a, filters: 16, kernel: 3, padding: 1, groups: 16)
      p = global_avgpool(d)
      f = flatten(p)
      o = dense(f, units: 3)
      loss = cross_entropy(o, y)
      output o
      minimize loss
      """
    #expect(try Self.program(split, target: target).channelsLast == ["a", "d"])
  }

  /// Training programs keep every value NCHW (the gradients' kernels are written for planes).
  @Test func trainingProgramsStayNCHW() throws {
    let source = try Self.fixture()
    let p = try lower(try Parser.parse(source, defaultName: "g"), batch: 2, mode: .train(OptimizerSpec(kind: .adam)), target: Self.targets[0])
    #expect(p.channelsLast.isEmpty)
  }
}
