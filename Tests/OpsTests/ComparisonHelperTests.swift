import CNNCTestSupport
import Testing

/// The comparison every differential test uses must fail on NaN and infinity, not pass over them.
struct ComparisonHelperTests {
  @Test(arguments: [Float.nan, .infinity, -.infinity]) func nonFiniteValuesAreTheWorstDifference(_ bad: Float) {
    let good: [Float] = [1, 2, 3, 4]
    for side in 0..<2 {
      var a = good, b = good
      if side == 0 { a[2] = bad } else { b[2] = bad }
      let (worst, at, scale) = worstDifference(a, b)
      #expect(worst == .infinity && at == 2, "\(bad) on side \(side): worst \(worst) at \(at)")
      #expect(scale == 4 || (side == 0 && scale == 4), "the scale counts finite values only, got \(scale)")
    }
    // The same non-finite value on both sides is still a failure.
    #expect(worstDifference([bad], [bad]).worst == .infinity)
  }

  @Test func finiteDifferencesAreMeasured() {
    let (worst, at, scale) = worstDifference([1, -5, 3], [1, -5.5, 3.25])
    #expect(worst == 0.5 && at == 1 && scale == 5)
    #expect(worstDifference([], []).worst == 0)
  }
}
