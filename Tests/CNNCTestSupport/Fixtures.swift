import Foundation
import GraphIR

/// Paths of the repository, found from this file so tests run from any directory.
public enum Fixtures {
  public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  public static var graphs: URL { root.appendingPathComponent("Graphs") }

  /// Every example graph in `Graphs/` (not the invalid ones).
  public static func exampleGraphs() throws -> [URL] {
    try FileManager.default.contentsOfDirectory(at: graphs, includingPropertiesForKeys: nil)
      .filter { $0.pathExtension == "graph" }.sorted { $0.lastPathComponent < $1.lastPathComponent }
  }

  /// Parses a graph file or fails with its rendered diagnostics.
  public static func parse(_ url: URL) throws -> Graph {
    let bytes = try [UInt8](Data(contentsOf: url))
    do {
      return try Parser.parse(bytes, defaultName: url.deletingPathExtension().lastPathComponent)
    } catch {
      throw FixtureError(error.render(file: url.lastPathComponent, source: bytes))
    }
  }
}

public struct FixtureError: Error, CustomStringConvertible {
  public var description: String
  public init(_ d: String) { description = d }
}
