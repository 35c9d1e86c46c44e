/// The optimiser as one pass over the parameters (they are contiguous, as are their gradients and state), in runs
/// that leave out the frozen ones (`Graph.frozen`).
extension Emitter {
  /// The runs of parameter floats the update covers: all of them, less the frozen parameters'.
  func trainedRuns() -> [Range<Int>] {
    let frozen = graph.frozen.compactMap { plan.placements[$0] }.map { $0.offset..<($0.offset + $0.count) }.sorted { $0.lowerBound < $1.lowerBound }
    var runs: [Range<Int>] = [], start = 0
    for f in frozen {
      if f.lowerBound > start { runs.append(start..<f.lowerBound) }
      start = max(start, f.upperBound)
    }
    if start < plan.parameterFloats { runs.append(start..<plan.parameterFloats) }
    return runs
  }

  mutating func emitOptimizer(_ o: OptimizerSpec) {
    let runs = trainedRuns(), count = runs.map(\.count).reduce(0, +)
    guard count > 0 else { return }
    body.append(.comment("\(o.kind.rawValue) = update of \(count) parameters"))
    func p(_ b: Base, _ i: IExpr) -> FExpr { .load(b, i) }
    let t = FExpr.ofInt(.step)
    switch o.kind {
    case .adam:
      // PyTorch's Adam: step = lr / (1 - b1^t); denominator sqrt(v) / sqrt(1 - b2^t) + eps.
      let stepSize = fresh("step_size"), bc2 = fresh("bc2_sqrt")
      body.append(.local(stepSize, .learningRate / (.c(1) - .exp(t * .c(Float.log(o.beta1))))))
      body.append(.local(bc2, .sqrt(.c(1) - .exp(t * .c(Float.log(o.beta2))))))
      body += loops(over: runs) { i in [
          .local("g", p(.grads, i) + .c(o.weightDecay) * p(.params, i)),
          .local("m_new", .c(o.beta1) * p(.m, i) + .c(1 - o.beta1) * .local("g")),
          .local("v_new", .c(o.beta2) * p(.v, i) + .c(1 - o.beta2) * .local("g") * .local("g")),
          .store(.m, i, .local("m_new")),
          .store(.v, i, .local("v_new")),
          .store(.params, i, p(.params, i) - .local(stepSize) * .local("m_new") / (.sqrt(.local("v_new")) / .local(bc2) + .c(o.epsilon))),
      ] }
    case .sgd:
      body += loops(over: runs) { i in
        let g = p(.grads, i) + .c(o.weightDecay) * p(.params, i)
        guard o.momentum != 0 else { return [.store(.params, i, p(.params, i) - .learningRate * g)] }
        // The first step starts the momentum buffer at the gradient itself, as PyTorch does.
        return [
          .local("buf", .select(.ieq(.step, .c(1)), g, .c(o.momentum) * p(.m, i) + g)),
          .store(.m, i, .local("buf")),
          .store(.params, i, p(.params, i) - .learningRate * .local("buf")),
        ]
      }
    }
  }

  /// A loop of `update(index)` over each run of parameter floats, the index offset to the run's first float.
  mutating func loops(over runs: [Range<Int>], _ update: (IExpr) -> [Stmt]) -> [Stmt] {
    runs.map { run in loop("i", run.count) { _, i in update(run.lowerBound == 0 ? i : i + .c(run.lowerBound)) } }
  }
}

#if canImport(Glibc)
  import Glibc
#endif
