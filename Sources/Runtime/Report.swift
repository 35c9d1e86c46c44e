import Foundation

/// Everything one training report shows.
public struct ReportData: Sendable {
  public var title: String
  public var history: [EpochReport]
  public var confusion: [[Int]]
  /// Misclassified test images: pixels (rows x cols bytes), true label, predicted label.
  public var mistakes: [(pixels: [UInt8], label: Int, predicted: Int)]
  public var rows: Int, cols: Int
  /// The first conv layer's filters ([k][k] each, first input channel) and its feature maps for one digit.
  public var filters: [[Float]]
  public var kernel: Int
  public var digit: [UInt8]
  public var featureMaps: [[Float]]
  public var mapHeight: Int, mapWidth: Int

  public init(title: String, history: [EpochReport], confusion: [[Int]], mistakes: [(pixels: [UInt8], label: Int, predicted: Int)],
              rows: Int, cols: Int, filters: [[Float]], kernel: Int, digit: [UInt8], featureMaps: [[Float]], mapHeight: Int, mapWidth: Int) {
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
    self.mapHeight = mapHeight
    self.mapWidth = mapWidth
  }
}

/// Renders a self-contained HTML page: curves, confusion heat map, misclassified digits, first-layer
/// filters and feature maps, all as inline SVG (no scripts, no external files).
public enum Report {
  public static func html(_ d: ReportData) -> String {
    var body = "<h1>\(escape(d.title))</h1>\n"
    if let last = d.history.last {
      body += String(format: "<p>%d epochs; final test accuracy <b>%.2f%%</b>, train loss %.4f.</p>\n", d.history.count, last.testAccuracy * 100, last.trainLoss)
    }
    body += "<h2>Loss and accuracy per epoch</h2>\n<div class=row>"
    body += curve("train loss", d.history.map(\.trainLoss), color: "#c0392b", percent: false)
    body += curve("accuracy (train blue, test green)", d.history.map(\.trainAccuracy), second: d.history.map(\.testAccuracy), color: "#2c7fb8", percent: true)
    body += "</div>\n<h2>Confusion matrix (rows: true label, columns: predicted)</h2>\n" + confusion(d.confusion)
    body += "<h2>Misclassified test digits (true → predicted)</h2>\n<div class=row>"
    for m in d.mistakes {
      body += "<figure>" + image(m.pixels.map { Float($0) / 255 }, d.rows, d.cols, scale: 3) + "<figcaption>\(m.label) → \(m.predicted)</figcaption></figure>"
    }
    body += "</div>\n<h2>First conv layer: filters</h2>\n<div class=row>"
    for (i, f) in d.filters.enumerated() {
      body += "<figure>" + image(normalize(f), d.kernel, d.kernel, scale: 12, diverging: true) + "<figcaption>\(i)</figcaption></figure>"
    }
    body += "</div>\n<h2>First conv layer: feature maps for one digit</h2>\n<div class=row><figure>"
      + image(d.digit.map { Float($0) / 255 }, d.rows, d.cols, scale: 3) + "<figcaption>input</figcaption></figure>"
    for (i, m) in d.featureMaps.enumerated() {
      body += "<figure>" + image(normalize(m), d.mapHeight, d.mapWidth, scale: 3) + "<figcaption>\(i)</figcaption></figure>"
    }
    body += "</div>\n"
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

  static func curve(_ title: String, _ a: [Double], second b: [Double]? = nil, color: String, percent: Bool) -> String {
    let (w, h, pad) = (420.0, 240.0, 40.0)
    let all = a + (b ?? [])
    var lo = all.min() ?? 0, hi = all.max() ?? 1
    if hi - lo < 1e-9 { lo -= 0.5; hi += 0.5 }
    func x(_ i: Int) -> Double { pad + (a.count > 1 ? Double(i) / Double(a.count - 1) : 0.5) * (w - 2 * pad) }
    func y(_ v: Double) -> Double { h - pad - (v - lo) / (hi - lo) * (h - 2 * pad) }
    func line(_ v: [Double], _ c: String) -> String {
      let pts = v.enumerated().map { String(format: "%.1f,%.1f", x($0.offset), y($0.element)) }.joined(separator: " ")
      return "<polyline fill=none stroke=\"\(c)\" stroke-width=2 points=\"\(pts)\"/>" + v.enumerated().map {
        String(format: "<circle cx=%.1f cy=%.1f r=3 fill=\"%@\"/>", x($0.offset), y($0.element), c)
      }.joined()
    }
    func label(_ v: Double) -> String { percent ? String(format: "%.2f%%", v * 100) : String(format: "%.4f", v) }
    var s = "<figure><svg width=\(Int(w)) height=\(Int(h))><rect width=\(Int(w)) height=\(Int(h)) fill=\"#fafafa\" stroke=\"#ddd\"/>"
    s += String(format: "<text x=%.0f y=20 font-size=13>%@</text>", pad, escape(title))
    s += String(format: "<text x=4 y=%.0f font-size=10>%@</text><text x=4 y=%.0f font-size=10>%@</text>", y(hi) + 4, label(hi), y(lo) + 4, label(lo))
    for i in a.indices { s += String(format: "<text x=%.1f y=%.0f font-size=10 text-anchor=middle>%d</text>", x(i), h - pad + 16, i + 1) }
    s += line(a, color)
    if let b { s += line(b, "#2ca25f") }
    return s + String(format: "<text x=%.0f y=%.0f font-size=10 text-anchor=middle>epoch</text></svg></figure>", w / 2, h - 6)
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
