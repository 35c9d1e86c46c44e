import Foundation

/// A learning-rate schedule stepped once per epoch, with PyTorch's semantics. The rate of an epoch is a
/// function of the base rate, the epoch and the history of the epochs before it, so a resumed run (which
/// restores the history) continues with exactly the rates a straight run would use.
public enum LRSchedule: Equatable, Sendable, CustomStringConvertible {
  /// The base rate throughout.
  case constant
  /// `StepLR(step_size: every, gamma)`: the rate times gamma after every `every` epochs.
  case step(every: Int, gamma: Double)
  /// `CosineAnnealingLR(T_max: epochs, eta_min: 0)`: base * (1 + cos(pi * epoch / epochs)) / 2.
  case cosine
  /// `ReduceLROnPlateau(mode: "min", factor, patience, threshold: 1e-4, threshold_mode: "rel")` on the
  /// validation loss (the training loss without a validation split).
  case plateau(patience: Int, factor: Double)

  /// PyTorch's default relative threshold for a plateau: better means below best * (1 - 1e-4).
  public static let plateauThreshold = 1e-4

  /// Parses `constant`, `step:EPOCHS:GAMMA`, `cosine` or `plateau:PATIENCE:FACTOR`.
  public init(parsing text: String) throws {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
    func fail() -> DataError {
      DataError("--lr-schedule '\(text)': expected constant, step:EPOCHS:GAMMA (e.g. step:5:0.5), cosine, or plateau:PATIENCE:FACTOR (e.g. plateau:2:0.1)")
    }
    switch parts[0] {
    case "constant" where parts.count == 1: self = .constant
    case "cosine" where parts.count == 1: self = .cosine
    case "step" where parts.count == 3:
      guard let every = Int(parts[1]), every >= 1, let gamma = Double(parts[2]), gamma > 0, gamma <= 1 else { throw fail() }
      self = .step(every: every, gamma: gamma)
    case "plateau" where parts.count == 3:
      guard let patience = Int(parts[1]), patience >= 0, let factor = Double(parts[2]), factor > 0, factor < 1 else { throw fail() }
      self = .plateau(patience: patience, factor: factor)
    default: throw fail()
    }
  }

  public var description: String {
    switch self {
    case .constant: "constant"
    case .step(let every, let gamma): "step:\(every):\(gamma)"
    case .cosine: "cosine"
    case .plateau(let patience, let factor): "plateau:\(patience):\(factor)"
    }
  }

  /// The rate for 0-based `epoch` of a run of `epochs`, given the monitored loss of each earlier epoch
  /// (the plateau schedule's input; the others ignore it).
  public func rate(base: Float, epoch: Int, epochs: Int, earlierLosses: [Double]) -> Float {
    switch self {
    case .constant: return base
    case .step(let every, let gamma): return Float(Double(base) * Foundation.pow(gamma, Double(epoch / every)))
    case .cosine: return Float(Double(base) * (1 + Foundation.cos(Double.pi * Double(epoch) / Double(max(1, epochs)))) / 2)
    case .plateau(let patience, let factor):
      var lr = Double(base), best = Double.infinity, bad = 0
      for loss in earlierLosses.prefix(epoch) {
        if loss < best * (1 - Self.plateauThreshold) {
          best = loss
          bad = 0
        } else {
          bad += 1
        }
        if bad > patience {
          lr *= factor
          bad = 0
        }
      }
      return Float(lr)
    }
  }
}
