import Foundation

/// A bundle folder (`pocketsam export`): the manifest (named by the contract's bundle layout) and the model file of
/// each part. `read` checks what `pocketsam.runtime.bundle.load_bundle` checks, before any engine sees a file, so a
/// bad bundle is one clear message instead of a crash or wrong masks: the folder and its manifest exist and parse;
/// the spec version is the contract's; the format is known; every field the app reads is present and of the right
/// type (`validate_manifest`'s schema); each part's file lies inside the folder and exists (a CoreML part is an
/// `.mlpackage` folder, every file in it inside the bundle too); both parts come from the same weights; each part's
/// sha256 is the manifest's. (The Python loader also reads each part's own weights stamp from inside the model
/// file; this reader does not parse model files.)
public struct BundleManifest: Sendable {
    /// One model file (or `.mlpackage` folder) of the bundle. `shapes`: the graph's input shapes in this file (an
    /// axis name where dynamic).
    public struct Part: Sendable {
        public let name: String
        public let url: URL
        public let precision: String
        public let sha256: String
        public let sizeBytes: Int
        public let weightsID: String
        public let shapes: [String: [JSON]]
    }

    public let root: URL
    /// "tflite", "onnx", "coreml".
    public let format: String
    public let specVersion: String
    public let encoder: Part
    public let decoder: Part
    /// E.g. "random weights, seed 0" or "mobile_sam.pt (sha256 a1b2…)".
    public let checkpointDescription: String
    /// The parts were made from seeded synthetic weights: masks are not meaningful segmentations.
    public let isSynthetic: Bool
    /// The whole manifest, as parsed.
    public let json: JSON

    /// The fixed point count of a fixed-shape decoder (TFLite), or nil when its point axis is dynamic (ONNX, CoreML).
    public var decoderPoints: Int? { decoder.shapes["point_labels"]?.last?.intValue }

    /// The folder's name: what benchmark rows call this contender.
    public var name: String { root.lastPathComponent }

    /// Read and check the bundle folder `root` against `contract`. `verifyHashes`: compare every part's sha256
    /// with the manifest's (a 40 MB encoder takes a fraction of a second with CryptoKit). Throws
    /// `PocketSAMError.bundle`.
    public static func read(_ root: URL, contract: Contract, verifyHashes: Bool = true) throws -> BundleManifest {
        let layout = contract.bundle
        let fm = FileManager.default
        var isDir: ObjCBool = false
        let shown = root.path
        guard fm.fileExists(atPath: root.path, isDirectory: &isDir) else {
            throw PocketSAMError.bundle("\(shown): no such bundle folder")
        }
        guard isDir.boolValue else {
            throw PocketSAMError.bundle("\(shown): a bundle is a folder with \(layout.manifest), not a file")
        }
        let file = root.appendingPathComponent(layout.manifest)
        guard fm.fileExists(atPath: file.path) else {
            throw PocketSAMError.bundle("\(shown): not a pocketsam bundle (no \(layout.manifest))")
        }
        let m: JSON
        do {
            m = try JSON.parse(try Data(contentsOf: file))
        } catch let e as JSONError {
            throw PocketSAMError.bundle("\(file.path): not valid JSON (\(e))")
        } catch {
            throw PocketSAMError.bundle("\(file.path): cannot be read (\(error.localizedDescription))")
        }
        guard m.objectItems != nil else { throw PocketSAMError.bundle("\(file.path): expected a JSON object") }
        // Python compares str(version): a manifest's "2" and 2 are both version 2
        let version: String
        switch m["spec_version"] {
        case let .string(s)?: version = s
        case let .int(i)?: version = String(i)
        case let v?: version = v.text()
        case nil: version = "None"
        }
        guard version == contract.specVersion else {
            throw PocketSAMError.bundle("\(shown): spec version \(version) is not this app's \(contract.specVersion); "
                + "re-export the bundle with the pocketsam this app was built with")
        }
        guard let format = m["format"]?.stringValue, layout.formatExtensions[format] != nil else {
            let known = layout.formatExtensions.keys.sorted().joined(separator: ", ")
            throw PocketSAMError.bundle("\(shown): unknown format \(m["format"].map { $0.text() } ?? "None") (known: \(known))")
        }
        try validate(m, parts: layout.parts)
        let parts = try layout.parts.map { try part(root, m, $0, format) }
        guard let encoder = parts.first(where: { $0.name == "encoder" }), let decoder = parts.first(where: { $0.name == "decoder" })
        else { throw PocketSAMError.contract("contract.json: the bundle's parts must include encoder and decoder") }
        if encoder.weightsID != decoder.weightsID {
            throw PocketSAMError.bundle("\(shown): the encoder (\(encoder.weightsID)) and the decoder (\(decoder.weightsID)) "
                + "come from different weights; export both parts from one checkpoint")
        }
        if verifyHashes { for p in parts { try checkSha(p) } }
        let checkpoint = m["checkpoint"]!
        return BundleManifest(root: root, format: format, specVersion: version, encoder: encoder, decoder: decoder,
                              checkpointDescription: checkpoint["description"]!.stringValue!,
                              isSynthetic: checkpoint["kind"]?.stringValue == "random", json: m)
    }

    // MARK: the manifest's schema: every value read here, checked once (as `bundle.validate_manifest`)

    private typealias Check = @Sendable (JSON) -> String?  // nil when fine, else what was expected instead

    private static func isCount(_ v: JSON) -> Bool { if let i = v.intValue { return i >= 0 }; return false }
    private static let text: Check = { v in (v.stringValue ?? "").isEmpty ? "a non-empty string" : nil }
    private static let sha: Check = { v in
        guard let s = v.stringValue, s.count == 64, s.allSatisfy({ "0123456789abcdef".contains($0) }) else {
            return "a sha256 (64 hex digits)"
        }
        return nil
    }
    private static let size: Check = { v in isCount(v) ? nil : "a byte count" }
    private static let fileName: Check = { v in
        guard let s = v.stringValue, !["", ".", ".."].contains(s), !s.contains("/"), !s.contains("\\") else {
            return "a file name inside the bundle folder (no folders, no '..')"
        }
        return nil
    }
    private static let shapes: Check = { v in
        let ok = v.objectItems?.allSatisfy { _, dims in
            dims.arrayValue?.allSatisfy { $0.stringValue != nil || isCount($0) } ?? false
        } ?? false
        return ok ? nil : "{input name: [dims]}, each dim an int or an axis name"
    }
    private static let kind: Check = { v in ["random", "file"].contains(v.stringValue ?? "") ? nil : "'random' or 'file'" }

    private static let partSchema: [(String, Check)] = [
        ("file", fileName), ("precision", text), ("sha256", sha), ("size_bytes", size), ("weights_id", text),
        ("shapes", shapes),
    ]
    private static let checkpointSchema: [(String, Check)] = [("kind", kind), ("description", text)]
    private static let probeSchema: [(String, Check)] = [("file", fileName), ("sha256", sha)]

    /// A value as the error message shows it: its JSON, at most 40 characters (as Python's `json.dumps(v)[:40]`).
    private static func shownValue(_ v: JSON?) -> String {
        String((v?.text(indent: 0).replacingOccurrences(of: "\n", with: "") ?? "null").prefix(40))
    }

    private static func checkFields(_ whereText: String, _ obj: JSON?, _ schema: [(String, Check)], _ errors: inout [String]) {
        guard let o = obj, o.objectItems != nil else {
            errors.append("\(whereText): expected an object, got \(shownValue(obj))")
            return
        }
        for (key, check) in schema {
            guard let v = o[key] else { errors.append("\(whereText).\(key): missing"); continue }
            if let expected = check(v) { errors.append("\(whereText).\(key): expected \(expected), got \(shownValue(v))") }
        }
    }

    /// PocketSAMError.bundle("bundle manifest invalid: …") naming (up to 3 of) the fields that are missing or of
    /// the wrong type.
    private static func validate(_ m: JSON, parts: [String]) throws {
        var errors: [String] = []
        if let p = m["parts"], p.objectItems != nil {
            for part in parts { checkFields("parts.\(part)", p[part], partSchema, &errors) }
        } else {
            errors.append("parts: expected an object with \(parts.joined(separator: " and ")), got \(shownValue(m["parts"]))")
        }
        checkFields("checkpoint", m["checkpoint"], checkpointSchema, &errors)
        if let c = m["checkpoint"], c["kind"]?.stringValue == "random", c["seed"]?.intValue == nil {
            errors.append("checkpoint.seed: expected an int, got \(shownValue(c["seed"]))")
        }
        if m["probe"] != nil { checkFields("probe", m["probe"], probeSchema, &errors) }
        if !errors.isEmpty {
            let more = errors.count > 3 ? " (and \(errors.count - 3) more)" : ""
            throw PocketSAMError.bundle("bundle manifest invalid: " + errors.prefix(3).joined(separator: "; ") + more)
        }
    }

    /// `url` with every symbolic link resolved, as a plain path (for "is it inside the bundle" checks).
    private static func realPath(_ url: URL) -> String {
        url.resolvingSymlinksInPath().standardizedFileURL.path
    }

    private static func isInside(_ path: String, _ folder: String) -> Bool {
        path.hasPrefix(folder.hasSuffix("/") ? folder : folder + "/")
    }

    private static func part(_ root: URL, _ m: JSON, _ name: String, _ format: String) throws -> Part {
        let entry = m["parts"]![name]!
        let fileName = entry["file"]!.stringValue!
        let url = root.appendingPathComponent(fileName)
        let fm = FileManager.default
        let shown = root.path
        // fileExists follows links: a dangling link is "missing", as Path.exists() says in Python
        guard fm.fileExists(atPath: url.path) else {
            throw PocketSAMError.bundle("\(shown): the \(name) file \(fileName) is missing")
        }
        let inside = realPath(root)
        let real = realPath(url)
        guard isInside(real, inside) else {
            throw PocketSAMError.bundle("\(shown): the \(name) file \(fileName) links to \(real), outside the bundle folder")
        }
        var isDir: ObjCBool = false
        _ = fm.fileExists(atPath: real, isDirectory: &isDir)
        if format == "coreml" {  // a CoreML part is an .mlpackage folder
            guard isDir.boolValue else {
                throw PocketSAMError.bundle("\(shown): the \(name) \(fileName) must be a .mlpackage folder")
            }
            for rel in try filesUnder(URL(fileURLWithPath: real)) {
                let f = realPath(URL(fileURLWithPath: real).appendingPathComponent(rel))
                if !isInside(f, inside) {
                    throw PocketSAMError.bundle("\(shown): \(fileName)/\(rel) links outside the bundle folder")
                }
            }
        } else if isDir.boolValue {
            throw PocketSAMError.bundle("\(shown): the \(name) file \(fileName) is not a regular file")
        }
        var shapes: [String: [JSON]] = [:]
        for (k, v) in entry["shapes"]!.objectItems! { shapes[k] = v.arrayValue! }
        return Part(name: name, url: url, precision: entry["precision"]!.stringValue!,
                    sha256: entry["sha256"]!.stringValue!, sizeBytes: entry["size_bytes"]!.intValue!,
                    weightsID: entry["weights_id"]!.stringValue!, shapes: shapes)
    }

    private static func checkSha(_ part: Part) throws {
        let actual = try sha256Of(part.url)
        if actual != part.sha256 {
            throw PocketSAMError.bundle("\(part.url.path): sha256 \(actual.prefix(12))… does not match the manifest's "
                + "\(part.sha256.prefix(12))… (the \(part.name) file is truncated, modified or from another export)")
        }
    }

    /// The regular files under `folder` (links followed), as '/'-joined paths relative to it, in Python's order for
    /// sorted `Path`s: part by part, each part compared by code points.
    static func filesUnder(_ folder: URL) throws -> [String] {
        let fm = FileManager.default
        var out: [[String]] = []
        func walk(_ dir: URL, _ prefix: [String]) throws {
            for name in try fm.contentsOfDirectory(atPath: dir.path) {
                let url = dir.appendingPathComponent(name)
                var isDir: ObjCBool = false
                guard fm.fileExists(atPath: url.path, isDirectory: &isDir) else { continue }  // a dangling link
                if isDir.boolValue { try walk(url, prefix + [name]) } else { out.append(prefix + [name]) }
            }
        }
        try walk(folder, [])
        func less(_ a: [String], _ b: [String]) -> Bool {
            for (x, y) in zip(a, b) where x != y {
                return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) { $0.value < $1.value }
            }
            return a.count < b.count
        }
        return out.sorted(by: less).map { $0.joined(separator: "/") }
    }

    /// sha256 of a file, or of every file of a folder (CoreML's .mlpackage) in the order of their relative paths,
    /// each preceded by its path and a NUL, as `pocketsam.runtime.bundle.sha256_of`.
    public static func sha256Of(_ url: URL) throws -> String {
        var hasher = FileHasher()
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw PocketSAMError.bundle("\(url.path): no such file")
        }
        if isDir.boolValue {
            for rel in try filesUnder(url) {
                hasher.update(Data((rel + "\u{0}").utf8))
                try hasher.feed(file: url.appendingPathComponent(rel))
            }
        } else {
            try hasher.feed(file: url)
        }
        return hasher.hexDigest()
    }
}
