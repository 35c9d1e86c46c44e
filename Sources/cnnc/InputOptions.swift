import ArgumentParser
import Runtime

/// How eval and predict prepare a model's images: the transforms and normalisation its checkpoint records, unless
/// these flags say otherwise. A model that records no normalisation gets MNIST's, and the command says so.
struct InputOptions: ParsableArguments {
  @Option(parsing: .unconditional, help: "Input normalisation instead of the checkpoint's: mnist (0.1307, 0.3081) or imagenet (torchvision's pretrained models': mean 0.485,0.456,0.406, std 0.229,0.224,0.225).")
  var normalize: String?
  @Option(parsing: .unconditional, help: "Normalisation mean, or one per channel comma-separated, instead of the checkpoint's (with --std).") var mean: String?
  @Option(parsing: .unconditional, help: "Normalisation standard deviation (> 0), or one per channel, as many as --mean.") var std: String?
  @Option(parsing: .unconditional, help: "Transforms of every image (PNG, JPEG or data set) before it is normalised, instead of the checkpoint's: resize:N (shorter side), resize:HxW, center_crop:N or HxW, comma-separated in order, as torchvision's Resize and CenterCrop (resize:256,center_crop:224).")
  var transform: String?

  func validate() throws {
    if let normalize, Normalization.presets[normalize] == nil {
      throw ValidationError("--normalize must be \(Normalization.presets.keys.sorted().joined(separator: " or ")), got '\(normalize)'")
    }
    guard (mean == nil) == (std == nil) else { throw ValidationError("--mean and --std go together") }
    guard normalize == nil || mean == nil else { throw ValidationError("--normalize and --mean/--std both name a normalisation; give one") }
    if let mean, let std, Normalization.parse(mean, std) == nil {
      throw ValidationError("--mean must be numbers and --std positive numbers, as many of each (one, or one per channel); got '\(mean)' and '\(std)'")
    }
    if let transform { _ = try Self.transforms(transform) }
  }

  /// `spec` as evaluation transforms: deterministic ones only.
  static func transforms(_ spec: String) throws -> [ImageTransform] {
    let t: [ImageTransform]
    do { t = try ImageTransform.parse(spec, option: "--transform") } catch { throw ValidationError("\(error)") }
    if let random = t.first(where: \.isRandom) {
      throw ValidationError("--transform \(random) is random; evaluation transforms are resize and center_crop (train takes --augment for random ones)")
    }
    return t
  }

  /// The normalisation and transforms for `model`'s images: the flags', else the checkpoint's, else MNIST's
  /// normalisation and no transforms, with a note on standard error that names the default.
  func resolve(_ model: TrainedModel) throws -> (normalization: Normalization, transforms: [ImageTransform]) {
    let transforms = try transform.map(Self.transforms) ?? model.recordedTransforms
    if let normalize { return (Normalization.presets[normalize]!, transforms) }
    if let mean, let std, let (means, stds) = Normalization.parse(mean, std) { return (Normalization(means: means, stds: stds), transforms) }
    if let recorded = model.recordedNormalization { return (recorded, transforms) }
    printError("note: \(model.weightsSource) records no input normalisation; using MNIST's \(Normalization.mnist) (--normalize imagenet, or --mean and --std, to choose)\n")
    return (.mnist, transforms)
  }
}
