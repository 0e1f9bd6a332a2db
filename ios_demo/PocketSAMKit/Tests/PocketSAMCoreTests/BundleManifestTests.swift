import Foundation
import PocketSAMCore
import XCTest

/// A bundle folder made here, as `pocketsam export` writes one: small stand-in part files (an .mlpackage folder
/// with two files for CoreML) and a manifest; `edit` changes the manifest before it is written.
func makeBundle(_ format: String = "coreml", name: String = "bundle", precision: String = "fp16",
                edit: (inout [(String, JSON)]) -> Void = { _ in }) throws -> URL {
    let contract = Golden.contract
    let fm = FileManager.default
    let root = fm.temporaryDirectory.appendingPathComponent("pocketsam-\(UUID().uuidString)").appendingPathComponent(name)
    try fm.createDirectory(at: root, withIntermediateDirectories: true)
    let ext = contract.bundle.formatExtensions[format]!
    var parts: [(String, JSON)] = []
    for part in contract.bundle.parts {
        let url = root.appendingPathComponent(part + ext)
        let bytes = Data((0..<(1000 + part.count)).map { UInt8(($0 * 7) & 0xff) })
        if format == "coreml" {
            try fm.createDirectory(at: url.appendingPathComponent("Data/com.apple.CoreML/weights"), withIntermediateDirectories: true)
            try Data("{\"fileFormatVersion\": \"1.0.0\"}".utf8).write(to: url.appendingPathComponent("Manifest.json"))
            try bytes.write(to: url.appendingPathComponent("Data/com.apple.CoreML/weights/weight.bin"))
        } else {
            try bytes.write(to: url)
        }
        let points: JSON = format == "tflite" ? .int(6) : .string("num_points")
        parts.append((part, .object([
            ("file", .string(part + ext)), ("precision", .string(precision)),
            ("sha256", .string(try BundleManifest.sha256Of(url))), ("size_bytes", .int(format == "coreml" ? 0 : bytes.count)),
            ("weights_id", .string("random:vit_t:seed0")),
            ("shapes", .object([("point_labels", .array([.int(1), points]))])),
        ])))
    }
    var m: [(String, JSON)] = [
        ("pocketsam_bundle", .int(1)), ("spec_version", .string(contract.specVersion)), ("format", .string(format)),
        ("parts", .object(parts)),
        ("checkpoint", .object([("kind", .string("random")), ("seed", .int(0)), ("description", .string("random weights, seed 0"))])),
    ]
    edit(&m)
    try Data(JSON.object(m).text().utf8).write(to: root.appendingPathComponent(contract.bundle.manifest))
    return root
}

/// Edit a nested object of a manifest under construction.
func editObject(_ items: inout [(String, JSON)], _ key: String, _ change: (inout [(String, JSON)]) -> Void) {
    guard let i = items.firstIndex(where: { $0.0 == key }), var inner = items[i].1.objectItems else { return }
    change(&inner)
    items[i].1 = .object(inner)
}

func setValue(_ items: inout [(String, JSON)], _ key: String, _ value: JSON?) {
    items.removeAll { $0.0 == key }
    if let v = value { items.append((key, v)) }
}

/// The bundle reader refuses what `pocketsam.runtime.bundle.load_bundle` refuses, each with its own message; and it
/// reads bundles `pocketsam export` wrote (the runner puts them in POCKETSAM_WORK/bundles/).
final class BundleManifestTests: XCTestCase {
    let contract = Golden.contract
    lazy var layout = contract.bundle

    private func refused(_ root: URL, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        expect(.bundle(""), fragment, file: file, line: line) { _ = try BundleManifest.read(root, contract: self.contract) }
    }

    func testReadsAGoodBundle() throws {
        let b = try BundleManifest.read(try makeBundle(), contract: contract)
        XCTAssertEqual(b.format, "coreml")
        XCTAssertEqual(b.specVersion, contract.specVersion)
        XCTAssertEqual(b.encoder.url.lastPathComponent, "encoder.mlpackage")
        XCTAssertEqual(b.decoder.url.lastPathComponent, "decoder.mlpackage")
        XCTAssertNil(b.decoderPoints)
        XCTAssertTrue(b.isSynthetic)
        XCTAssertEqual(b.checkpointDescription, "random weights, seed 0")
        XCTAssertEqual(b.name, "bundle")
        XCTAssertEqual(try BundleManifest.read(try makeBundle("tflite"), contract: contract).decoderPoints, 6)
        // Python reads str(spec_version): the number 2 is version "2"
        let numeric = try makeBundle { setValue(&$0, "spec_version", .int(Int(self.contract.specVersion)!)) }
        XCTAssertEqual(try BundleManifest.read(numeric, contract: contract).specVersion, contract.specVersion)
    }

    func testRefusesBadBundles() throws {
        let fm = FileManager.default
        let m = layout.manifest
        refused(URL(fileURLWithPath: "/nonexistent/bundle"), "no such bundle folder")
        refused(try makeBundle().appendingPathComponent(m), "a bundle is a folder with \(m), not a file")
        var root = try makeBundle()
        try fm.removeItem(at: root.appendingPathComponent(m))
        refused(root, "not a pocketsam bundle (no \(m))")
        root = try makeBundle()
        try Data("{\"spec_version\": ".utf8).write(to: root.appendingPathComponent(m))
        refused(root, "not valid JSON")
        try Data("[1, 2]".utf8).write(to: root.appendingPathComponent(m))
        refused(root, "expected a JSON object")
        // the wrong spec version
        refused(try makeBundle { setValue(&$0, "spec_version", .string("1")) },
                "spec version 1 is not this app's \(contract.specVersion); re-export")
        refused(try makeBundle { setValue(&$0, "spec_version", nil) }, "spec version None")
        refused(try makeBundle { setValue(&$0, "format", .string("savedmodel")) }, "unknown format \"savedmodel\"")
        // missing parts: the decoder's entry, its file, or a field the app reads
        refused(try makeBundle { editObject(&$0, "parts") { setValue(&$0, "decoder", nil) } }, "parts.decoder: expected an object")
        root = try makeBundle()
        try fm.removeItem(at: root.appendingPathComponent("decoder.mlpackage"))
        refused(root, "the decoder file decoder.mlpackage is missing")
        refused(try makeBundle { editObject(&$0, "parts") { editObject(&$0, "encoder") { setValue(&$0, "sha256", nil) } } },
                "parts.encoder.sha256: missing")
        refused(try makeBundle { editObject(&$0, "parts") { editObject(&$0, "encoder") { setValue(&$0, "size_bytes", .int(-1)) } } },
                "parts.encoder.size_bytes: expected a byte count")
        refused(try makeBundle { editObject(&$0, "parts") { editObject(&$0, "encoder") { setValue(&$0, "size_bytes", .double(3.0)) } } },
                "parts.encoder.size_bytes: expected a byte count")
        refused(try makeBundle { editObject(&$0, "parts") { editObject(&$0, "decoder") { setValue(&$0, "file", .string("../decoder.mlpackage")) } } },
                "parts.decoder.file: expected a file name")
        refused(try makeBundle { setValue(&$0, "checkpoint", nil) }, "checkpoint: expected an object")
        refused(try makeBundle { editObject(&$0, "checkpoint") { setValue(&$0, "seed", .string("zero")) } }, "checkpoint.seed: expected an int")
        refused(try makeBundle { setValue(&$0, "probe", .object([("file", .string("probe.npz"))])) }, "probe.sha256: missing")
        refused(try makeBundle { editObject(&$0, "parts") { editObject(&$0, "decoder") { setValue(&$0, "weights_id", .string("random:vit_t:seed1")) } } },
                "come from different weights")
        // many problems: the first three and a count
        refused(try makeBundle { editObject(&$0, "parts") { editObject(&$0, "encoder") {
            for k in ["sha256", "precision", "shapes", "weights_id"] { setValue(&$0, k, nil) }
        } } }, "(and 1 more)")
        // a part that differs from the one the manifest describes: a file inside the .mlpackage changed
        root = try makeBundle()
        let weights = root.appendingPathComponent("encoder.mlpackage/Data/com.apple.CoreML/weights/weight.bin")
        try (try Data(contentsOf: weights) + Data([1])).write(to: weights)
        refused(root, "does not match the manifest's")
        // a file where CoreML needs an .mlpackage folder, and a folder where TFLite needs a file
        root = try makeBundle()
        try fm.removeItem(at: root.appendingPathComponent("decoder.mlpackage"))
        try Data([1, 2, 3]).write(to: root.appendingPathComponent("decoder.mlpackage"))
        refused(root, "must be a .mlpackage folder")
        root = try makeBundle("tflite")
        try fm.removeItem(at: root.appendingPathComponent("decoder.tflite"))
        try fm.createDirectory(at: root.appendingPathComponent("decoder.tflite"), withIntermediateDirectories: false)
        refused(root, "is not a regular file")
    }

    func testRefusesAPartLinkedFromOutside() throws {
        let fm = FileManager.default
        let root = try makeBundle("tflite")
        let encoder = root.appendingPathComponent("encoder.tflite")
        let outside = fm.temporaryDirectory.appendingPathComponent("elsewhere-\(UUID().uuidString).tflite")
        try fm.copyItem(at: encoder, to: outside)
        try fm.removeItem(at: encoder)
        try fm.createSymbolicLink(at: encoder, withDestinationURL: outside)
        refused(root, "outside the bundle folder")
        // and a file inside an .mlpackage that links out
        let ml = try makeBundle()
        let weights = ml.appendingPathComponent("decoder.mlpackage/Data/com.apple.CoreML/weights/weight.bin")
        let away = fm.temporaryDirectory.appendingPathComponent("weights-\(UUID().uuidString).bin")
        try fm.copyItem(at: weights, to: away)
        try fm.removeItem(at: weights)
        try fm.createSymbolicLink(at: weights, withDestinationURL: away)
        refused(ml, "links outside the bundle folder")
    }

    /// `sha256_of` of a folder: every file's relative path, a NUL and its bytes, in Python's sorted-Path order
    /// (part by part: "a/b" before "a-b"; plain string order would put "a-b" first).
    func testFolderHashIsPythons() throws {
        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("hash-\(UUID().uuidString)")
        try fm.createDirectory(at: dir.appendingPathComponent("a"), withIntermediateDirectories: true)
        try Data("one".utf8).write(to: dir.appendingPathComponent("a/b"))
        try Data("two".utf8).write(to: dir.appendingPathComponent("a-b"))
        // pocketsam.runtime.bundle.sha256_of of this folder
        XCTAssertEqual(try BundleManifest.sha256Of(dir), Sha256.hex(Array("a/b\u{0}onea-b\u{0}two".utf8)))
        XCTAssertEqual(try BundleManifest.sha256Of(dir), "f4aed4fd5fdca420df59ee0ee45f7d8aebeb4aad3b416d1c4447b5b6a8232059")
    }

    /// Bundles written by `pocketsam export` (tests/test_ios_demo.py exports small ones into POCKETSAM_WORK/bundles):
    /// each reads, and each part's sha256 (a CoreML .mlpackage's too) is the manifest's.
    func testReadsBundlesPocketsamWrote() throws {
        guard let work = Golden.work else { throw XCTSkip("no POCKETSAM_WORK given") }
        let folder = work.appendingPathComponent("bundles")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path))?.sorted() ?? []
        if names.isEmpty { throw XCTSkip("no bundles in POCKETSAM_WORK/bundles (tests/test_ios_demo.py exports them)") }
        for name in names {
            let b = try BundleManifest.read(folder.appendingPathComponent(name), contract: contract)
            XCTAssertEqual(b.specVersion, contract.specVersion)
            for p in [b.encoder, b.decoder] { XCTAssertEqual(try BundleManifest.sha256Of(p.url), p.sha256) }
            print("read \(b.format) bundle \(b.name): encoder \(b.encoder.precision), decoder \(b.decoder.precision), "
                + "decoder points \(b.decoderPoints.map(String.init) ?? "dynamic"), \(b.checkpointDescription)")
        }
    }
}
