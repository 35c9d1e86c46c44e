/// The optimiser as one pass over the parameters (they are contiguous, as are their gradients and state), in runs
/// that leave out the frozen ones (`Graph.frozen`) and share one learning rate (`OptimizerSpec.rateScales`).
extension Emitter {
  /// The runs of parameter floats the update covers and their learning-rate scales: every parameter but the frozen
  /// ones, neighbours of one scale in one run.
  func trainedRuns(_ o: OptimizerSpec) -> [(floats: Range<Int>, scale: Float)] {
    func ranges(_ names: some Sequence<String>) -> [Range<Int>] {
      names.compactMap { plan.placements[$0] }.map { $0.offset..<($0.offset + $0.count) }.sorted { $0.lowerBound < $1.lowerBound }
    }
    // Every float, less the frozen parameters', at scale 1 ...
    var runs: [(floats: Range<Int>, scale: Float)] = [], start = 0
    for f in ranges(graph.frozen) {
      if f.lowerBound > start { runs.append((start..<f.lowerBound, 1)) }
      start = max(start, f.upperBound)
    }
    if start < plan.parameterFloats { runs.append((start..<plan.parameterFloats, 1)) }
    // ... then each scaled parameter cut out of the run that holds it.
    for (name, scale) in o.rateScales.sorted(by: { $0.key < $1.key }) where scale != 1 {
      guard let r = ranges([name]).first, let i = runs.firstIndex(where: { $0.floats.contains(r.lowerBound) }) else { continue }
      let run = runs[i]
      let pieces = [(run.floats.lowerBound..<r.lowerBound, run.scale), (r, scale), (r.upperBound..<run.floats.upperBound, run.scale)]
      runs.replaceSubrange(i...i, with: pieces.filter { !$0.0.isEmpty })
    }
    return runs
  }

  mutating func emitOptimizer(_ o: OptimizerSpec) {
    let runs = trainedRuns(o), count = runs.map(\.floats.count).reduce(0, +)
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
      body += loops(over: runs) { i, scale in [
          .local("g", p(.grads, i) + .c(o.weightDecay) * p(.params, i)),
          .local("m_new", .c(o.beta1) * p(.m, i) + .c(1 - o.beta1) * .local("g")),
          .local("v_new", .c(o.beta2) * p(.v, i) + .c(1 - o.beta2) * .local("g") * .local("g")),
          .store(.m, i, .local("m_new")),
          .store(.v, i, .local("v_new")),
          .store(.params, i, p(.params, i) - Self.scaled(.local(stepSize), scale) * .local("m_new") / (.sqrt(.local("v_new")) / .local(bc2) + .c(o.epsilon))),
      ] }
    case .sgd:
      body += loops(over: runs) { i, scale in
        let g = p(.grads, i) + .c(o.weightDecay) * p(.params, i), lr = Self.scaled(.learningRate, scale)
        guard o.momentum != 0 else { return [.store(.params, i, p(.params, i) - lr * g)] }
        // The first step starts the momentum buffer at the gradient itself, as PyTorch does.
        return [
          .local("buf", .select(.ieq(.step, .c(1)), g, .c(o.momentum) * p(.m, i) + g)),
          .store(.m, i, .local("buf")),
          .store(.params, i, p(.params, i) - lr * .local("buf")),
        ]
      }
    }
  }

  /// A loop of `update(index, scale)` over each run of parameter floats, the index offset to the run's first float.
  mutating func loops(over runs: [(floats: Range<Int>, scale: Float)], _ update: (IExpr, Float) -> [Stmt]) -> [Stmt] {
    runs.map { run in loop("i", run.floats.count) { _, i in update(run.floats.lowerBound == 0 ? i : i + .c(run.floats.lowerBound), run.scale) } }
  }

  /// A learning rate (or Adam's step size) times a run's scale; itself at scale 1.
  static func scaled(_ rate: FExpr, _ scale: Float) -> FExpr { scale == 1 ? rate : rate * .c(scale) }
}

#if canImport(Glibc)
  import Glibc
#endif
