import Runtime
import Testing

/// The one confusion matrix: counts, precision, recall and the most frequent confusions.
struct EvaluationTests {
  @Test func confusionMatrixCountsAndRanks() {
    let labels: [UInt8] = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    let predictions = [0, 1, 1, 1, 0, 2, 0, 0, 1]
    let m = ConfusionMatrix(predictions: predictions, labels: labels, classes: 3)
    #expect(m.counts == [[1, 2, 0], [1, 1, 0], [2, 1, 1]])
    #expect(m.precision(0) == 0.25 && m.recall(2) == 0.25)
    let top = m.topConfusions(3)
    #expect(top.map(\.count) == [2, 2, 1])
    #expect(top.map { [$0.label, $0.predicted] } == [[0, 1], [2, 0], [1, 0]])
    #expect(m.topConfusions(100).count == 4, "zero counts are left out")
    #expect(ConfusionMatrix(predictions: [], labels: [], classes: 2).precision(1) == 0)
  }
}
