import Foundation
import PocketSAMCore
import XCTest

/// One array of a .npy file: its numpy dtype string ("<f2", "<f4", "|u1"), shape and raw little-endian bytes.
struct NpyArray {
    let dtype: String
    let shape: [Int]
    let bytes: [UInt8]

    var count: Int { shape.reduce(1, *) }

    /// The values as float32 (float16 and float32 arrays).
    func floats() -> [Float] {
        switch dtype {
        case "<f4":
            return (0..<count).map { i -> Float in
                let b0 = UInt32(bytes[4 * i]), b1 = UInt32(bytes[4 * i + 1])
                let b2 = UInt32(bytes[4 * i + 2]), b3 = UInt32(bytes[4 * i + 3])
                return Float(bitPattern: b0 | (b1 << 8) | (b2 << 16) | (b3 << 24))
            }
        case "<f2":
            return (0..<count).map { i -> Float in
                let lo = UInt16(bytes[2 * i]), hi = UInt16(bytes[2 * i + 1])
                return halfToFloat(lo | (hi << 8))
            }
        default:
            XCTFail("not a float array: \(dtype)")
            return []
        }
    }

    /// `np.unpackbits(a, count=n)` of a uint8 array: bit 7 of byte 0 first.
    func unpackBits(_ n: Int) -> [Bool] {
        precondition(dtype == "|u1", "not a uint8 array: \(dtype)")
        return (0..<n).map { (bytes[$0 / 8] >> (7 - UInt8($0 % 8))) & 1 == 1 }
    }

    /// A .npy file (format versions 1-3, C order).
    static func read(_ url: URL) throws -> NpyArray {
        let raw = [UInt8](try Data(contentsOf: url))
        guard raw.count > 10, raw[0] == 0x93, String(decoding: raw[1..<6], as: UTF8.self) == "NUMPY" else {
            throw PocketSAMError.image("\(url.path): not .npy")
        }
        let major = raw[6]
        let (headerLen, start) = major == 1
            ? (Int(raw[8]) | Int(raw[9]) << 8, 10)
            : (Int(raw[8]) | Int(raw[9]) << 8 | Int(raw[10]) << 16 | Int(raw[11]) << 24, 12)
        let header = String(decoding: raw[start..<(start + headerLen)], as: UTF8.self)
        func match(_ pattern: String) -> String? {
            guard let r = header.range(of: pattern, options: .regularExpression) else { return nil }
            return String(header[r])
        }
        guard let descrField = match("'descr':\\s*'[^']+'"), let shapeField = match("'shape':\\s*\\([^)]*\\)") else {
            throw PocketSAMError.image("\(url.path): no descr or shape in \(header)")
        }
        guard !header.contains("'fortran_order': True") else { throw PocketSAMError.image("\(url.path): Fortran order") }
        let descr = descrField.split(separator: "'")[2]
        let dims = shapeField.drop(while: { $0 != "(" }).dropFirst().dropLast()
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map { Int($0)! }
        return NpyArray(dtype: String(descr), shape: dims, bytes: Array(raw[(start + headerLen)...]))
    }
}

/// IEEE half -> float (normals, subnormals, zeros, inf/nan), without Float16 (absent on Intel Macs).
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h >> 15) << 31
    let exp = Int((h >> 10) & 0x1f)
    let mant = UInt32(h & 0x3ff)
    let bits: UInt32
    if exp == 0 && mant == 0 {
        bits = sign
    } else if exp == 0 {  // subnormal: normalize
        var e = 0
        var m = mant
        while m & 0x400 == 0 { m <<= 1; e -= 1 }
        bits = sign | UInt32(e + 127 - 14) << 23 | (m & 0x3ff) << 13
    } else if exp == 0x1f {
        bits = sign | 0xff << 23 | mant << 13
    } else {
        bits = sign | UInt32(exp - 15 + 127) << 23 | mant << 13
    }
    return Float(bitPattern: bits)
}

/// The golden files made by UPSTREAM segment-anything / MobileSAM (`tests/golden/`, found through the environment
/// the runner sets: POCKETSAM_GOLDEN, POCKETSAM_WORK with the .npy copies, POCKETSAM_MASK_IOU) and small readers
/// for them, shared by the tests.
enum Golden {
    static let env = ProcessInfo.processInfo.environment

    static var dir: URL {
        guard let d = env["POCKETSAM_GOLDEN"] else { fatalError("run with POCKETSAM_GOLDEN=DIR (tests/golden): ios_demo/run-linux-tests.sh") }
        return URL(fileURLWithPath: d)
    }

    /// The folder the runner shares with the tests (golden-npy/, bundles/, out/), or nil.
    static var work: URL? { env["POCKETSAM_WORK"].map { URL(fileURLWithPath: $0) } }

    static let contract: Contract = try! Contract.load(dir.appendingPathComponent("contract.json"))
    static let doc: JSON = try! JSON.parse(Data(contentsOf: dir.appendingPathComponent("golden.json")))
    static var images: [JSON] { doc["images"]!.arrayValue! }

    /// The mask IoU bound the runner passes in: the parity table's e2e fp32 row.
    static var maskIouBound: Double {
        guard let b = env["POCKETSAM_MASK_IOU"].flatMap(Double.init) else {
            fatalError("run with POCKETSAM_MASK_IOU=B: the e2e fp32 mask IoU bound of pocketsam.runtime.parity")
        }
        return b
    }

    static func name(_ image: JSON) -> String { image["name"]!.stringValue! }

    static func size(_ v: JSON?) -> Size {
        let hw = v!.flatNumbers!
        return Size(h: Int(hw[0]), w: Int(hw[1]))
    }

    static func doubles(_ v: JSON?) -> [Double] { v!.flatNumbers! }
    static func floats32(_ v: JSON?) -> [Float] { doubles(v).map { Float($0) } }

    /// The .npy copy of `key` of an image's .npz (POCKETSAM_WORK/golden-npy/<image>/<key>.npy), or nil.
    static func npy(_ image: JSON, _ key: String) throws -> NpyArray? {
        guard let work else { fatalError("run with POCKETSAM_WORK=DIR holding golden-npy/ (ios_demo/prepare_goldens.py)") }
        let url = work.appendingPathComponent("golden-npy/\(name(image))/\(key).npy")
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        return try NpyArray.read(url)
    }

    /// The photo of a golden image entry, as the RGB bytes upstream saw (decoded by PIL into image.npy).
    static func photo(_ image: JSON) throws -> RgbImage {
        let a = try npy(image, "image")!
        XCTAssertEqual(a.dtype, "|u1")
        return try RgbImage(h: a.shape[0], w: a.shape[1], data: a.bytes)
    }

    /// The user prompt of a golden prompt entry (original frame).
    static func prompt(_ p: JSON) throws -> Prompt {
        try Prompt(points: p["point_coords"].map { doubles($0) } ?? [],
                   labels: p["point_labels"].map { doubles($0).map { Int($0) } } ?? [],
                   box: p["box"].map { doubles($0) })
    }

    /// The decoder tokens upstream's PromptEncoder saw for a golden prompt entry: its transformed points, its
    /// transformed box corners (labels 2, 3), and the pad point when points come without a box.
    static func upstreamTokens(_ p: JSON) -> DecoderTokens {
        let lab = contract.labels
        var xy: [Float] = []
        var codes: [Float] = []
        if p["point_coords"] != nil {
            xy += floats32(p["point_coords_transformed"])
            codes += doubles(p["point_labels"]).map { Float($0) }
        }
        if p["box"] != nil {
            xy += floats32(p["box_transformed"])
            codes += [Float(lab.boxTopLeft), Float(lab.boxBottomRight)]
        } else if p["point_coords"] != nil {
            xy += [0, 0]
            codes.append(Float(lab.pad))
        }
        return DecoderTokens(coords: xy, labels: codes)
    }

    /// Pooled IoU of two mask stacks (as `pocketsam.runtime.verify.pooled_iou`).
    static func iou(_ a: [Bool], _ b: [Bool]) -> Double {
        precondition(a.count == b.count, "masks of \(a.count) and \(b.count) pixels")
        var inter = 0, union = 0
        for i in a.indices {
            if a[i] && b[i] { inter += 1 }
            if a[i] || b[i] { union += 1 }
        }
        return union == 0 ? 1.0 : Double(inter) / Double(union)
    }

    /// The prompt entries of an image (8 kinds, see tests/golden/README.md).
    static func prompts(_ image: JSON) -> [JSON] { image["prompts"]!.arrayValue! }

    /// A folder for files the tests write (POCKETSAM_WORK/out), or nil when the runner gave none.
    static var out: URL? {
        guard let w = work else { return nil }
        let o = w.appendingPathComponent("out")
        try? FileManager.default.createDirectory(at: o, withIntermediateDirectories: true)
        return o
    }
}
