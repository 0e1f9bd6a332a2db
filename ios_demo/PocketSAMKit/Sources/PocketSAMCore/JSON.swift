import Foundation

/// A JSON value, parsed and written by this package itself (no `JSONSerialization`): the same on Linux and Apple
/// platforms, key order kept, and integers told apart from floats the way Python's `json` does (a number written
/// with a fraction or an exponent is a float), which the bundle manifest's schema checks need.
public indirect enum JSON: Equatable, Sendable, CustomStringConvertible {
    case null
    case bool(Bool)
    /// A number written without fraction or exponent (Python's `int`); `Int` when it fits, else only `.double`.
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSON])
    /// Key order kept (as Python writes dicts).
    case object([(String, JSON)])

    public static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case let (.double(x), .double(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    // MARK: reading

    /// The member `key` of an object, or nil (also when this is not an object).
    public subscript(key: String) -> JSON? {
        if case let .object(items) = self { return items.first(where: { $0.0 == key })?.1 }
        return nil
    }

    public var objectItems: [(String, JSON)]? { if case let .object(o) = self { return o }; return nil }
    public var arrayValue: [JSON]? { if case let .array(a) = self { return a }; return nil }
    public var stringValue: String? { if case let .string(s) = self { return s }; return nil }
    public var boolValue: Bool? { if case let .bool(b) = self { return b }; return nil }
    /// An integer literal's value (`.int`), else nil: 1.0 is not an int, as in Python.
    public var intValue: Int? { if case let .int(i) = self { return i }; return nil }
    /// Any number as a Double.
    public var doubleValue: Double? {
        switch self {
        case let .int(i): return Double(i)
        case let .double(d): return d
        default: return nil
        }
    }
    public var isNull: Bool { if case .null = self { return true }; return false }

    /// Every number of a (nested) array, flattened in order; nil when anything else is in it.
    public var flatNumbers: [Double]? {
        if let d = doubleValue { return [d] }
        guard let a = arrayValue else { return nil }
        var out: [Double] = []
        for v in a {
            guard let inner = v.flatNumbers else { return nil }
            out += inner
        }
        return out
    }

    // MARK: parsing

    /// Parse JSON text. Numbers go through `Double(String)` (correctly rounded), so the float64 values Python
    /// wrote with `repr` come back bit for bit.
    public static func parse(_ text: String) throws -> JSON {
        var p = Parser(bytes: Array(text.utf8))
        let v = try p.value()
        p.skipSpace()
        guard p.pos == p.bytes.count else { throw JSONError("trailing text at offset \(p.pos)") }
        return v
    }

    public static func parse(_ data: Data) throws -> JSON {
        guard let text = String(data: data, encoding: .utf8) else { throw JSONError("not UTF-8 text") }
        return try parse(text)
    }

    // MARK: writing

    /// JSON text indented by `indent` spaces per level, like Python's `json.dumps(indent=1)`. A non-finite
    /// double is written as null (JSON has no NaN).
    public func text(indent: Int = 1) -> String {
        var out = ""
        write(&out, indent: indent, depth: 0)
        return out
    }

    public var description: String { text() }

    private func write(_ out: inout String, indent: Int, depth: Int) {
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .int(i): out += String(i)
        case let .double(d): out += d.isFinite ? JSON.formatDouble(d) : "null"
        case let .string(s): JSON.writeString(&out, s)
        case let .array(items):
            JSON.writeItems(&out, items.count, "[", "]", indent, depth) { i, o in
                items[i].write(&o, indent: indent, depth: depth + 1)
            }
        case let .object(items):
            JSON.writeItems(&out, items.count, "{", "}", indent, depth) { i, o in
                JSON.writeString(&o, items[i].0)
                o += ": "
                items[i].1.write(&o, indent: indent, depth: depth + 1)
            }
        }
    }

    /// Shortest round-trip text of a double, always with a fraction or exponent (so it reads back as a float).
    static func formatDouble(_ d: Double) -> String {
        let s = "\(d)"  // Swift prints the shortest representation that round-trips
        return s.contains(".") || s.contains("e") || s.contains("n") || s.contains("i") ? s : s + ".0"
    }

    private static func writeItems(_ out: inout String, _ n: Int, _ open: String, _ close: String, _ indent: Int,
                                   _ depth: Int, _ item: (Int, inout String) -> Void) {
        out += open
        if n == 0 { out += close; return }
        for i in 0..<n {
            if i > 0 { out += "," }
            out += "\n" + String(repeating: " ", count: indent * (depth + 1))
            item(i, &out)
        }
        out += "\n" + String(repeating: " ", count: indent * depth) + close
    }

    private static func writeString(_ out: inout String, _ s: String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    out += String(format: "\\u%04x", u.value)
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out += "\""
    }
}

/// A JSON text that cannot be parsed.
public struct JSONError: Error, CustomStringConvertible {
    public let description: String
    init(_ message: String) { description = message }
}

private struct Parser {
    let bytes: [UInt8]
    var pos = 0

    mutating func skipSpace() {
        while pos < bytes.count, [0x20, 0x0a, 0x0d, 0x09].contains(bytes[pos]) { pos += 1 }
    }

    mutating func value() throws -> JSON {
        skipSpace()
        guard pos < bytes.count else { throw JSONError("it ends too early") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default: return try number()
        }
    }

    mutating func literal(_ word: String) throws {
        let w = Array(word.utf8)
        guard pos + w.count <= bytes.count, Array(bytes[pos..<pos + w.count]) == w else {
            throw JSONError("unexpected text at offset \(pos)")
        }
        pos += w.count
    }

    mutating func expect(_ c: Character) throws {
        skipSpace()
        guard pos < bytes.count, bytes[pos] == c.asciiValue! else {
            throw JSONError(pos < bytes.count ? "expected '\(c)' at offset \(pos)" : "it ends too early")
        }
        pos += 1
    }

    mutating func object() throws -> JSON {
        try expect("{")
        var items: [(String, JSON)] = []
        skipSpace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(items) }
        while true {
            skipSpace()
            guard pos < bytes.count else { throw JSONError("it ends too early") }
            guard bytes[pos] == UInt8(ascii: "\"") else { throw JSONError("expected a key at offset \(pos)") }
            let key = try string()
            try expect(":")
            items.append((key, try value()))
            skipSpace()
            guard pos < bytes.count else { throw JSONError("it ends too early") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            try expect("}")
            return .object(items)
        }
    }

    mutating func array() throws -> JSON {
        try expect("[")
        var items: [JSON] = []
        skipSpace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
        while true {
            items.append(try value())
            skipSpace()
            guard pos < bytes.count else { throw JSONError("it ends too early") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            try expect("]")
            return .array(items)
        }
    }

    mutating func hex4() throws -> UInt32 {
        guard pos + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[pos..<pos + 4], as: UTF8.self), radix: 16)
        else { throw JSONError("bad \\u escape at offset \(pos)") }
        pos += 4
        return v
    }

    mutating func string() throws -> String {
        pos += 1  // the opening quote
        var out: [UInt8] = []
        while true {
            guard pos < bytes.count else { throw JSONError("it ends too early") }
            let c = bytes[pos]
            pos += 1
            if c == UInt8(ascii: "\"") { break }
            if c != UInt8(ascii: "\\") { out.append(c); continue }
            guard pos < bytes.count else { throw JSONError("it ends too early") }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "n"): out.append(0x0a)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0d)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0c)
            case UInt8(ascii: "u"):
                var code = try hex4()
                if (0xd800..<0xdc00).contains(code), pos + 6 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"),
                   bytes[pos + 1] == UInt8(ascii: "u") {
                    pos += 2
                    let low = try hex4()
                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00)
                }
                out += Array(String(Character(Unicode.Scalar(code) ?? "\u{fffd}")).utf8)
            default: out.append(e)  // \" \\ \/
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    mutating func number() throws -> JSON {
        let start = pos
        var isInt = true
        while pos < bytes.count {
            let c = bytes[pos]
            if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") {
                isInt = false
            } else if !(c == UInt8(ascii: "-") || c == UInt8(ascii: "+") || (c >= 0x30 && c <= 0x39)) {
                break
            }
            pos += 1
        }
        let text = String(decoding: bytes[start..<pos], as: UTF8.self)
        if text == "NaN" || text.isEmpty {
            // Python writes NaN/Infinity for non-finite floats; they are not JSON and never in pocketsam's files
            throw JSONError("unexpected text at offset \(start)")
        }
        if isInt, let i = Int(text) { return .int(i) }
        guard let d = Double(text) else { throw JSONError("bad number \(text) at offset \(start)") }
        return .double(d)
    }
}
