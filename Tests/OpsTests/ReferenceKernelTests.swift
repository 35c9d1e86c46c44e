import Foundation
import GraphIR
import Testing

/// Tiny hand-computed cases for each op's reference kernels.
@Suite struct ReferenceKernelTests {
  typealias T = Tensor<Double>

  @Test func conv2dForwardAndBackward() {
    // 1x1x3x3 input, one 2x2 filter, bias 1: each output is the window's weighted sum + 1.
    let x = T(shape: [1, 1, 3, 3], data: [1, 2, 3, 4, 5, 6, 7, 8, 9])
    let w = T(shape: [1, 1, 2, 2], data: [1, 0, 0, -1])
    let a = Conv2DAttrs(filters: 1, kernel: 2)
    let y = Conv2D.forward(a, x, weight: w, bias: T(shape: [1], data: [1]))
    #expect(y.shape == [1, 1, 2, 2])
    #expect(y.data == [-3, -3, -3, -3])
    let dy = T(shape: [1, 1, 2, 2], data: [1, 1, 1, 1])
    #expect(Conv2D.backwardBias(dy: dy).data == [4])
    #expect(Conv2D.backwardWeight(a, dy: dy, x: x).data == [12, 16, 24, 28])
    #expect(Conv2D.backwardInput(a, dy: dy, weight: w, xShape: [1, 1, 3, 3]).data == [1, 1, 0, 1, 0, -1, 0, -1, -1])
    // Padding 1, stride 2 on the same input: corners see the zero padding.
    let p = Conv2DAttrs(filters: 1, kernel: 2, stride: 2, padding: 1)
    #expect(Conv2D.forward(p, x, weight: w, bias: nil).data == [-1, -3, -7, -4])
  }

  @Test func reluAndItsGradient() {
    let x = T(shape: [4], data: [-1, 0, 2, -3])
    #expect(ReLU.forward(x).data == [0, 0, 2, 0])
    #expect(ReLU.backward(dy: T(shape: [4], data: [5, 6, 7, 8]), y: ReLU.forward(x)).data == [0, 0, 7, 0])
  }

  /// GELU's rational erf is within 7e-8 of libm's, and its derivative is the derivative of the value (so the
  /// gradient check holds it to the formula, and PyTorch's exact GELU is matched to float32's precision).
  @Test func geluIsTheExactFormToWithinItsErfApproximation() {
    let gelu = GELUOp()
    var worstValue = 0.0, worstSlope = 0.0
    for i in -7000...7000 {
      let x = Double(i) / 1000
      worstValue = max(worstValue, abs(gelu.value(x) - x / 2 * (1 + erf(x / 2.0.squareRoot()))))
      let h = 1e-6, numeric = (gelu.value(x + h) - gelu.value(x - h)) / (2 * h)
      worstSlope = max(worstSlope, abs(gelu.derivative(dy: 1, saved: x) - numeric))
    }
    #expect(worstValue < 7e-8 * 7 / 2, "GELU differs from x * Phi(x) by \(worstValue)")
    #expect(worstSlope < 1e-8, "the derivative differs from the value's slope by \(worstSlope)")
    #expect(gelu.value(Float(0)) == 0 && gelu.value(Float(100)) == 100 && gelu.value(Float(-100)) == 0, "float32 saturates exactly")
  }

  @Test func maxPoolRoutesToTheFirstMaximum() {
    let x = T(shape: [1, 1, 2, 4], data: [1, 3, 5, 5, 2, 3, 0, 1])
    let a = PoolAttrs(size: 2)
    #expect(MaxPool.forward(a, x).data == [3, 5])
    let dx = MaxPool.backward(a, dy: T(shape: [1, 1, 1, 2], data: [10, 20]), x: x)
    #expect(dx.data == [0, 10, 20, 0, 0, 0, 0, 0], "ties go to the first maximum in row-major order")
  }

  @Test func avgPoolSpreadsEvenly() {
    let x = T(shape: [1, 1, 2, 2], data: [1, 2, 3, 6])
    let a = PoolAttrs(size: 2)
    #expect(AvgPool.forward(a, x).data == [3])
    #expect(AvgPool.backward(a, dy: T(shape: [1, 1, 1, 1], data: [8]), xShape: [1, 1, 2, 2]).data == [2, 2, 2, 2])
  }

  @Test func denseMatchesXWTPlusB() {
    let x = T(shape: [1, 2], data: [1, 2])
    let w = T(shape: [3, 2], data: [1, 0, 0, 1, 1, 1])
    #expect(Dense.forward(x, weight: w, bias: T(shape: [3], data: [0, 1, 2])).data == [1, 3, 5])
    let dy = T(shape: [1, 3], data: [1, 2, 3])
    #expect(Dense.backwardInput(dy: dy, weight: w).data == [4, 5])
    #expect(Dense.backwardWeight(dy: dy, x: x).data == [1, 2, 2, 4, 3, 6])
    #expect(Dense.backwardBias(dy: dy).data == [1, 2, 3])
  }

  @Test func batchNormUsesBatchStatisticsInTrainingAndRunningOnesInInference() throws {
    // One channel of [2, 1, 1, 2]: values 1, 3, 5, 7 (mean 4, biased variance 5); weight 2, bias 1.
    let node = Node(name: "bn", op: .batchNorm(BatchNormAttrs(eps: 0)), args: ["x"])
    let x = T(shape: [2, 1, 1, 2], data: [1, 3, 5, 7]), w = T(shape: [1], data: [2]), b = T(shape: [1], data: [1])
    let operands: [RefValue<Double>] = [.f32(x), .f32(w), .f32(b), .f32(T(shape: [1], data: [10])), .f32(T(shape: [1], data: [4]))]
    let train = try node.op.referenceOutputs(node, operands, ReferenceContext(training: true))
    #expect(train[1].data == [4] && train[2].data == [5])
    let s = 2 / 5.0.squareRoot()
    #expect(zip(train[0].data, [-3 * s + 1, -s + 1, s + 1, 3 * s + 1]).allSatisfy { abs($0 - $1) < 1e-12 })
    let infer = try node.op.reference(node, operands, ReferenceContext(training: false))
    #expect(infer.data == [-8, -6, -4, -2], "(x - 10) / sqrt(4) * 2 + 1")
    let one = T(shape: [1, 1], data: [3])
    #expect(throws: EvaluationError.self) { _ = try node.op.reference(node, [.f32(one), .f32(w), .f32(b), .f32(w), .f32(w)], ReferenceContext(training: true)) }
  }

  @Test func batchNormRunningStatisticsComeFromTheWholeBatch() {
    // One channel in two shards of three values: the whole batch {1, 2, 6, -1, 0, 4} has mean 2 and
    // unbiased variance 34 / 5, whatever the shards' own statistics were.
    let op = BatchNormOp(BatchNormAttrs(momentum: 0.25))
    func stats(_ v: [Double]) -> [[Float]] {
      let m = v.reduce(0, +) / Double(v.count)
      return [[Float(m)], [Float(v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count))]]
    }
    let updated = op.updatedBuffers([[0], [1]], shardStatistics: [stats([1, 2, 6]), stats([-1, 0, 4])], elementsPerShard: 3)
    #expect(abs(updated[0][0] - 0.5) < 1e-6, "0.75 * 0 + 0.25 * 2")
    #expect(abs(updated[1][0] - 2.45) < 1e-6, "0.75 * 1 + 0.25 * 6.8")
  }

  @Test func softmaxAndCrossEntropy() throws {
    let z = T(shape: [1, 2], data: [0, 0])
    #expect(Softmax.forward(z).data == [0.5, 0.5])
    let loss = try CrossEntropy.forward(T(shape: [2, 2], data: [0, 0, 1000, 0]), labels: [1, 0])
    #expect(abs(loss.data[0] - 0.5 * Double.log(2)) < 1e-12, "stable for large logits")
    let g = try CrossEntropy.backward(T(shape: [1, 2], data: [0, 0]), labels: [1])
    #expect(g.data == [0.5, -0.5])
    #expect(throws: EvaluationError.self) { try CrossEntropy.forward(z, labels: [2]) }
  }

  @Test func dropoutKeepsAboutOneMinusRateAndScales() {
    let x = T(shape: [100_000], data: [Double](repeating: 1, count: 100_000))
    let ctx = ReferenceContext(training: true, seed: 1, step: 0)
    let y = Dropout.apply(DropoutAttrs(rate: 0.25), x, key: Dropout.key("drop"), ctx)
    let kept = y.data.filter { $0 != 0 }
    #expect(abs(Double(kept.count) / 1e5 - 0.75) < 0.01)
    #expect(kept.allSatisfy { abs($0 - 1 / 0.75) < 1e-12 })
    // The mask is a function of (seed, step, key, element): same inputs, same mask; another step differs.
    #expect(Dropout.apply(DropoutAttrs(rate: 0.25), x, key: Dropout.key("drop"), ctx) == y)
    #expect(Dropout.apply(DropoutAttrs(rate: 0.25), x, key: Dropout.key("drop"), ReferenceContext(training: true, seed: 1, step: 1)) != y)
  }

  @Test func flattenIsAView() {
    let x = T(shape: [2, 1, 2, 2], data: [1, 2, 3, 4, 5, 6, 7, 8])
    #expect(Flatten.forward(x).shape == [2, 4])
    #expect(Flatten.backward(dy: Flatten.forward(x), xShape: [2, 1, 2, 2]) == x)
  }
}
