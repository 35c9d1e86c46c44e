/// A token of the `.graph` language.
public struct Token: Equatable, Sendable {
  public enum Kind: Equatable, Sendable {
    case identifier(String)
    case integer(String)
    case float(String)
    /// A quoted string (format 1.3: a `state` statement's `state_dict` prefix), without its quotes.
    case string(String)
    case punct(UInt8)
    case newline
    case end
    case invalid(String)
  }
  public var kind: Kind
  public var range: SourceRange
}

/// Turns source bytes into tokens; works on bytes so invalid UTF-8 is an error, never a trap.
struct Lexer {
  private let bytes: [UInt8]
  private var pos = 0
  private var line = 1
  private var lineStart = 0

  init(_ bytes: [UInt8]) { self.bytes = bytes }

  private var column: Int { pos - lineStart + 1 }

  private static func isIdentStart(_ b: UInt8) -> Bool {
    (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b == 95
  }
  private static func isDigit(_ b: UInt8) -> Bool { b >= 48 && b <= 57 }

  mutating func tokenize() -> [Token] {
    var tokens: [Token] = []
    while true {
      let t = next()
      tokens.append(t)
      if t.kind == .end { return tokens }
    }
  }

  private func text(_ from: Int, _ to: Int) -> String { String(decoding: bytes[from..<to], as: UTF8.self) }

  mutating func next() -> Token {
    skipBlanksAndComments()
    let start = pos
    let col = column
    guard pos < bytes.count else { return Token(kind: .end, range: SourceRange(line: line, column: col)) }
    let b = bytes[pos]
    if b == 10 {
      let t = Token(kind: .newline, range: SourceRange(line: line, column: col))
      pos += 1
      line += 1
      lineStart = pos
      return t
    }
    if Self.isIdentStart(b) {
      while pos < bytes.count && (Self.isIdentStart(bytes[pos]) || Self.isDigit(bytes[pos])) { pos += 1 }
      return Token(kind: .identifier(text(start, pos)), range: SourceRange(line: line, column: col, length: pos - start))
    }
    if Self.isDigit(b) { return number(start, col) }
    // A minus sign directly before a digit starts a negative number (format 1.2: `slope: -0.5`).
    if b == 45, pos + 1 < bytes.count, Self.isDigit(bytes[pos + 1]) {
      pos += 1
      return number(start, col)
    }
    // A string: printable ASCII up to the closing quote on the same line.
    if b == 34 {
      var end = pos + 1
      while end < bytes.count, bytes[end] != 34, bytes[end] >= 32, bytes[end] < 127 { end += 1 }
      guard end < bytes.count, bytes[end] == 34 else {
        pos += 1
        return Token(kind: .invalid("'\"' (a string without its closing quote on the line)"), range: SourceRange(line: line, column: col))
      }
      pos = end + 1
      return Token(kind: .string(text(start + 1, end)), range: SourceRange(line: line, column: col, length: pos - start))
    }
    switch b {
    case 61, 40, 41, 44, 58, 91, 93, 46:  // = ( ) , : [ ] .
      pos += 1
      return Token(kind: .punct(b), range: SourceRange(line: line, column: col))
    default:
      // One invalid character (a whole UTF-8 sequence when it is one) per token.
      var end = pos + 1
      while end < bytes.count && end - pos < 4 && bytes[end] & 0xC0 == 0x80 { end += 1 }
      pos = end
      return Token(kind: .invalid(Self.shown(bytes[start..<end])), range: SourceRange(line: line, column: col, length: end - start))
    }
  }

  /// Moves past spaces, tabs, carriage returns, a leading byte-order mark and `#` comments.
  private mutating func skipBlanksAndComments() {
    while pos < bytes.count {
      let b = bytes[pos]
      if b == 32 || b == 9 || b == 13 { pos += 1; continue }
      // A UTF-8 byte-order mark that some editors write at the start of a file is not text.
      if pos == 0, bytes.starts(with: [0xEF, 0xBB, 0xBF]) { pos = 3; continue }
      if b == 35 {  // '#': to end of line
        while pos < bytes.count && bytes[pos] != 10 { pos += 1 }
        continue
      }
      break
    }
  }

  /// An integer, or a float with a fraction and an optional exponent, starting at a digit (after any minus sign).
  private mutating func number(_ start: Int, _ col: Int) -> Token {
    while pos < bytes.count && Self.isDigit(bytes[pos]) { pos += 1 }
    var isFloat = false
    if pos < bytes.count && bytes[pos] == 46 {  // '.'
      isFloat = true
      pos += 1
      while pos < bytes.count && Self.isDigit(bytes[pos]) { pos += 1 }
    }
    if isFloat && pos < bytes.count && (bytes[pos] == 101 || bytes[pos] == 69) {  // e/E
      var p = pos + 1
      if p < bytes.count && (bytes[p] == 43 || bytes[p] == 45) { p += 1 }
      if p < bytes.count && Self.isDigit(bytes[p]) {
        while p < bytes.count && Self.isDigit(bytes[p]) { p += 1 }
        pos = p
      }
    }
    let s = text(start, pos)
    let range = SourceRange(line: line, column: col, length: pos - start)
    return Token(kind: isFloat ? .float(s) : .integer(s), range: range)
  }

  /// How a diagnostic shows an invalid character: itself when printable, with its code point when not
  /// ASCII, the code point alone when invisible, or the byte when not valid UTF-8.
  static func shown(_ sequence: ArraySlice<UInt8>) -> String {
    let b = sequence.first!
    if b >= 0x20 && b < 0x7F { return "'\(Character(UnicodeScalar(b)))'" }
    if let s = String(validating: sequence, as: UTF8.self), s.count == 1, b >= 0x80, let u = s.unicodeScalars.first {
      // Invisible characters (spaces, joiners, marks) are named by code point alone.
      let code = "U+" + String(u.value, radix: 16, uppercase: true).leftPadded(to: 4)
      let visible = !u.properties.isWhitespace && ![.format, .control, .spaceSeparator, .nonspacingMark, .enclosingMark, .unassigned, .privateUse]
        .contains(u.properties.generalCategory)
      return visible ? "'\(s)' (\(code))" : code + (u.value == 0xFEFF ? " (a byte-order mark)" : " (an invisible character)")
    }
    return "byte 0x" + String(b, radix: 16, uppercase: true)
  }
}

extension String {
  /// The string with zeros in front up to `width` characters.
  func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
