import Foundation

/// Everything one training report shows.
public struct ReportData: Sendable {
  public var title: String
  public var history: [EpochReport]
  public var confusion: [[Int]]
  /// Misclassified test images: pixels (channels x rows x cols bytes, planar), true label, predicted label.
  public var mistakes: [(pixels: [UInt8], label: Int, predicted: Int)]
  public var rows: Int, cols: Int
  /// Channels of the images: 1 (grey) or 3 (RGB planes, drawn in colour); others draw their first plane.
  public var channels: Int
  /// The first conv layer's filters ([k][k] each: every input channel's plane for RGB input, drawn in colour;
  /// else the first input channel's), and the feature maps of the first conv layers for one image.
  public var filters: [[Float]]
  public var kernel: Int
  public var digit: [UInt8]
  public var featureMaps: [FeatureMaps]

  public init(title: String, history: [EpochReport], confusion: [[Int]], mistakes: [(pixels: [UInt8], label: Int, predicted: Int)],
              rows: Int, cols: Int, channels: Int = 1, filters: [[Float]], kernel: Int, digit: [UInt8], featureMaps: [FeatureMaps]) {
    self.channels = channels
    self.title = title
    self.history = history
    self.confusion = confusion
    self.mistakes = mistakes
    self.rows = rows
    self.cols = cols
    self.filters = filters
    self.kernel = kernel
    self.digit = digit
    self.featureMaps = featureMaps
  }
}

/// One conv layer's output channels for one image (after relu), each height x width.
public struct FeatureMaps: Sendable {
  public var layer: String
  public var maps: [[Float]]
  public var height: Int, width: Int
  public init(layer: String, maps: [[Float]], height: Int, width: Int) { (self.layer, self.maps, self.height, self.width) = (layer, maps, height, width) }
}

/// Renders a self-contained HTML page: curves, confusion heat map, misclassified digits, first-layer
/// filters and feature maps, all as inline SVG (no scripts, no external files).
public enum Report {
  public static func html(_ d: ReportData) -> String {
    var body = "<h1>\(escape(d.title))</h1>\n"
    let h = d.history
    if let last = h.last {
      body += String(format: "<p>%d epoch%@; final test accuracy <b>%.2f%%</b>, train loss %.4f.</p>\n", h.count, h.count == 1 ? "" : "s",
                     last.testAccuracy * 100, last.trainLoss)
    }
    // The best epoch as the trainer recorded it (by the monitored value); older histories: by validation accuracy.
    let best = h.last?.bestEpoch ?? h.filter { $0.validationAccuracy != nil }.max { $0.validationAccuracy! < $1.validationAccuracy! }?.epoch
    if let last = h.last, last.stoppedEarly == true {
      body += "<p><b>Stopped early</b> after epoch \(last.epoch): the monitored value did not improve for the patience set."
        + (best.map { " Best epoch: \($0) (its weights are best.safetensors)." } ?? "") + "</p>\n"
    }
    // A diverged run's non-finite losses are left out of the charts (the history keeps them).
    let losses = h.flatMap { $0.stepLosses ?? [] }.filter(\.isFinite)
    if !losses.isEmpty {
      body += "<h2>Training loss per step</h2>\n<div class=row>" + stepChart(losses) + "</div>\n"
    }
    body += "<h2>Loss and accuracy per epoch</h2>\n<div class=row>"
    body += chart("loss (mean cross-entropy)", [("train", "#c0392b", h.map { $0.trainLoss }), ("validation", "#8e44ad", h.map(\.validationLoss)),
                                               ("test", "#2ca25f", h.map(\.testLoss))], percent: false, best: best)
    body += chart("accuracy", [("train", "#2c7fb8", h.map { $0.trainAccuracy }), ("validation", "#8e44ad", h.map(\.validationAccuracy)),
                               ("test", "#2ca25f", h.map { $0.testAccuracy })], percent: true, best: best)
    body += "</div>\n<h2>Confusion matrix (rows: true label, columns: predicted)</h2>\n" + confusion(d.confusion)
    body += "<h2>Misclassified test images (true → predicted)</h2>\n<div class=row>"
    for m in d.mistakes {
      body += "<figure>" + picture(m.pixels, d) + "<figcaption>\(m.label) → \(m.predicted)</figcaption></figure>"
    }
    body += "</div>\n<h2>First conv layer: filters</h2>\n<div class=row>"
    for (i, f) in d.filters.enumerated() {
      let drawn = d.channels == 3 && f.count == 3 * d.kernel * d.kernel
        ? colour(normalize(f).map { 0.5 + 0.5 * $0 }, d.kernel, d.kernel, scale: 12)
        : image(normalize(f), d.kernel, d.kernel, scale: 12, diverging: true)
      body += "<figure>" + drawn + "<figcaption>\(i)</figcaption></figure>"
    }
    body += "</div>\n"
    for layer in d.featureMaps {
      body += "<h2>Feature maps of \(escape(layer.layer)) for one image (after relu)</h2>\n<div class=row><figure>"
        + picture(d.digit, d) + "<figcaption>input</figcaption></figure>"
      let scale = max(2, 84 / max(layer.height, layer.width))
      for (i, m) in layer.maps.enumerated() {
        body += "<figure>" + image(normalize(m), layer.height, layer.width, scale: scale) + "<figcaption>\(i)</figcaption></figure>"
      }
      body += "</div>\n"
    }
    return """
      <!DOCTYPE html>
      <html lang="en"><head><meta charset="utf-8"><title>\(escape(d.title))</title>
      <style>body{font-family:sans-serif;margin:24px;color:#222}h2{margin-top:28px;font-size:18px}
      .row{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;text-align:center;font-size:12px}svg{display:block}</style>
      </head><body>
      \(body)</body></html>

      """
  }

  static func escape(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
  }

  /// Values scaled by their largest magnitude, into [-1, 1].
  static func normalize(_ v: [Float]) -> [Float] {
    let m = v.map(abs).max() ?? 1
    return m > 0 ? v.map { $0 / m } : v
  }

  /// An input image's bytes: in colour when the images are RGB, else its first (grey) plane.
  static func picture(_ pixels: [UInt8], _ d: ReportData) -> String {
    let values = pixels.map { Float($0) / 255 }
    return d.channels == 3 ? colour(values, d.rows, d.cols, scale: 3) : image(Array(values.prefix(d.rows * d.cols)), d.rows, d.cols, scale: 3)
  }

  /// A grid of squares coloured by three planes of values in [0, 1] (red, green, blue).
  static func colour(_ v: [Float], _ h: Int, _ w: Int, scale: Int) -> String {
    var s = "<svg width=\(w * scale) height=\(h * scale) viewBox=\"0 0 \(w) \(h)\" shape-rendering=crispEdges>"
    let plane = h * w
    func byte(_ x: Float) -> Int { Int((max(0, min(1, x)) * 255).rounded()) }
    for i in 0..<plane {
      s += "<rect x=\(i % w) y=\(i / w) width=1 height=1 fill=\"rgb(\(byte(v[i])),\(byte(v[plane + i])),\(byte(v[2 * plane + i])))\"/>"
    }
    return s + "</svg>"
  }

  /// A grid of grey (or blue-white-red for signed values) squares.
  static func image(_ v: [Float], _ h: Int, _ w: Int, scale: Int, diverging: Bool = false) -> String {
    var s = "<svg width=\(w * scale) height=\(h * scale) viewBox=\"0 0 \(w) \(h)\" shape-rendering=crispEdges><rect width=\(w) height=\(h) fill=\"#000\"/>"
    for y in 0..<h {
      for x in 0..<w {
        let t = max(-1, min(1, v[y * w + x]))
        let color: String
        if diverging {
          let c = Int((1 - abs(t)) * 255)
          color = t >= 0 ? "rgb(255,\(c),\(c))" : "rgb(\(c),\(c),255)"
        } else {
          guard t > 0.02 else { continue }  // black background already drawn
          let g = Int(t * 255)
          color = "rgb(\(g),\(g),\(g))"
        }
        s += "<rect x=\(x) y=\(y) width=1 height=1 fill=\"\(color)\"/>"
      }
    }
    return s + "</svg>"
  }

  /// Grid lines (and tick labels) a chart's value axis gets.
  static let gridLines = 5

  /// A line chart of per-epoch series (absent values skipped) with a legend, a grid with ticks, a loss axis
  /// from zero, and a dashed marker at the best epoch.
  static func chart(_ title: String, _ series: [(name: String, color: String, values: [Double?])], percent: Bool, best: Int?) -> String {
    let (w, h, pad, left) = (460.0, 260.0, 40.0, 56.0)
    let series = series.map { (name: $0.name, color: $0.color, values: $0.values.map { (v: Double?) -> Double? in v.flatMap { $0.isFinite ? $0 : nil } }) }
    let shown = series.filter { $0.values.contains { $0 != nil } }
    let all = shown.flatMap { $0.values.compactMap { $0 } }
    let epochs = series.first?.values.count ?? 0
    // Losses from zero (a loss is never negative); accuracies over their range.
    var lo = percent ? (all.min() ?? 0) : 0, hi = all.max() ?? 1
    if hi - lo < 1e-9 { lo = max(0, lo - 0.05); hi += 0.05 }
    func x(_ i: Int) -> Double { left + (epochs > 1 ? Double(i) / Double(epochs - 1) : 0.5) * (w - left - pad) }
    func y(_ v: Double) -> Double { h - pad - (v - lo) / (hi - lo) * (h - 2 * pad) }
    func label(_ v: Double) -> String { percent ? String(format: "%.1f%%", v * 100) : String(format: "%.3f", v) }
    var s = "<figure><svg width=\(Int(w)) height=\(Int(h)) font-size=10><rect width=\(Int(w)) height=\(Int(h)) fill=\"#fafafa\" stroke=\"#ddd\"/>"
    s += String(format: "<text x=%.0f y=18 font-size=13>%@</text>", left, escape(title))
    for g in 0...gridLines {
      let v = lo + (hi - lo) * Double(g) / Double(gridLines)
      s += String(format: "<line x1=%.0f x2=%.0f y1=%.1f y2=%.1f stroke=\"#e3e3e3\"/>", left, w - pad, y(v), y(v))
      s += String(format: "<text x=%.0f y=%.1f text-anchor=end>%@</text>", left - 4, y(v) + 3, label(v))
    }
    for i in 0..<epochs { s += String(format: "<text x=%.1f y=%.0f text-anchor=middle>%d</text>", x(i), h - pad + 14, i + 1) }
    if let best, best >= 1, best <= epochs {
      s += String(format: "<line x1=%.1f x2=%.1f y1=%.0f y2=%.0f stroke=\"#888\" stroke-dasharray=\"4 3\"/><text x=%.1f y=%.0f fill=\"#666\">best</text>",
                  x(best - 1), x(best - 1), pad, h - pad, x(best - 1) + 3, pad + 8)
    }
    for (k, series) in shown.enumerated() {
      let points = series.values.enumerated().compactMap { i, v in v.map { (x(i), y($0)) } }
      s += "<polyline fill=none stroke=\"\(series.color)\" stroke-width=2 points=\"" + points.map { String(format: "%.1f,%.1f", $0.0, $0.1) }.joined(separator: " ") + "\"/>"
      s += points.map { String(format: "<circle cx=%.1f cy=%.1f r=3 fill=\"%@\"/>", $0.0, $0.1, series.color) }.joined()
      s += String(format: "<text x=%.0f y=32 fill=\"%@\">— %@</text>", left + Double(k) * 80, series.color, series.name)
    }
    return s + String(format: "<text x=%.0f y=%.0f text-anchor=middle>epoch</text></svg></figure>", (left + w - pad) / 2, h - 8)
  }

  /// The weight of the running value in the smoothed loss curve (TensorBoard's slider at 0.9: its default 0.6 barely
  /// smooths a thousand steps per epoch).
  static let smoothing = 0.9
  /// The most points a per-step curve draws (longer runs are drawn every k-th step).
  static let maxStepPoints = 2000

  /// The exponential moving average TensorBoard draws, debiased so the first steps are not pulled to zero.
  public static func smoothed(_ v: [Double]) -> [Double] {
    var last = 0.0, weight = 1.0
    return v.map { x in
      last = last * smoothing + (1 - smoothing) * x
      weight *= smoothing
      return last / (1 - weight)
    }
  }

  /// Per-step training loss: the raw values faint, the smoothed curve over them, the axis from zero.
  static func stepChart(_ losses: [Double]) -> String {
    let (w, h, pad, left) = (940.0, 260.0, 40.0, 56.0)
    let hi = max(losses.max() ?? 1, 1e-9), n = losses.count
    let every = max(1, (n + maxStepPoints - 1) / maxStepPoints)
    func x(_ i: Int) -> Double { left + (n > 1 ? Double(i) / Double(n - 1) : 0.5) * (w - left - pad) }
    func y(_ v: Double) -> Double { h - pad - v / hi * (h - 2 * pad) }
    var s = "<figure><svg width=\(Int(w)) height=\(Int(h)) font-size=10><rect width=\(Int(w)) height=\(Int(h)) fill=\"#fafafa\" stroke=\"#ddd\"/>"
    s += String(format: "<text x=%.0f y=18 font-size=13>loss per step (smoothed %.1f, raw faint)</text>", left, smoothing)
    for g in 0...gridLines {
      let v = hi * Double(g) / Double(gridLines)
      s += String(format: "<line x1=%.0f x2=%.0f y1=%.1f y2=%.1f stroke=\"#e3e3e3\"/>", left, w - pad, y(v), y(v))
      s += String(format: "<text x=%.0f y=%.1f text-anchor=end>%.3f</text>", left - 4, y(v) + 3, v)
    }
    for g in 0...gridLines {
      let i = (n - 1) * g / gridLines
      s += String(format: "<text x=%.1f y=%.0f text-anchor=middle>%d</text>", x(i), h - pad + 14, i + 1)
    }
    for (values, color, width) in [(losses, "#f0b8b0", 1.0), (smoothed(losses), "#c0392b", 2.0)] {
      let points = stride(from: 0, to: n, by: every).map { String(format: "%.1f,%.1f", x($0), y(values[$0])) }
      s += "<polyline fill=none stroke=\"\(color)\" stroke-width=\(width) points=\"" + points.joined(separator: " ") + "\"/>"
    }
    return s + String(format: "<text x=%.0f y=%.0f text-anchor=middle>step</text></svg></figure>", (left + w - pad) / 2, h - 8)
  }

  static func confusion(_ m: [[Int]]) -> String {
    let k = m.count, cell = 36
    let peak = Double(m.flatMap { $0 }.max() ?? 1)
    var s = "<svg width=\((k + 1) * cell) height=\((k + 1) * cell) font-size=11>"
    for i in 0..<k {
      s += "<text x=\((i + 1) * cell + cell / 2) y=\(cell - 8) text-anchor=middle>\(i)</text>"
      s += "<text x=\(cell / 2) y=\((i + 1) * cell + cell / 2 + 4) text-anchor=middle>\(i)</text>"
      for j in 0..<k {
        let v = m[i][j]
        let t = v == 0 ? 0 : 0.08 + 0.92 * (Double(v) / peak).squareRoot()
        let fill = i == j ? String(format: "rgba(44,127,184,%.3f)", t) : String(format: "rgba(192,57,43,%.3f)", min(1, t * 3))
        s += "<rect x=\((j + 1) * cell) y=\((i + 1) * cell) width=\(cell - 1) height=\(cell - 1) fill=\"\(fill)\"/>"
        s += "<text x=\((j + 1) * cell + cell / 2) y=\((i + 1) * cell + cell / 2 + 4) text-anchor=middle fill=\"\(t > 0.6 && i == j ? "#fff" : "#222")\">\(v)</text>"
      }
    }
    return s + "</svg>"
  }
}
