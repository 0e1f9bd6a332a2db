import Foundation
import PocketSAMCore
import XCTest

/// The Swift pre/post-processing against the golden files made by UPSTREAM segment-anything / MobileSAM
/// (`tests/golden/`, the same files `tests/test_golden.py` holds the Python runtime to and the Kotlin core's
/// GoldenTest reads), stage by stage: resize (bit-exact, by sha256), coordinates (float32 bit-equal), the decoder's
/// prompt tokens, and masks from the golden low-res logits (mask IoU bound from the one parity table, passed in by
/// the runner).
final class GoldenTests: XCTestCase {
    let contract = Golden.contract

    func testContractHoldsTheSpecConstants() throws {
        // what the Python spec wrote, read back; the names and numbers below are checked against the file, which
        // tests/test_golden.py keeps equal to runtime/spec.py
        let raw = try JSON.parse(Data(contentsOf: Golden.dir.appendingPathComponent("contract.json")))
        let c = raw["constants"]!
        XCTAssertEqual(contract.specVersion, c["spec_version"]!.stringValue)
        XCTAssertEqual(contract.imageSize, c["image_size"]!.intValue)
        XCTAssertEqual(contract.pixelMean, c["pixel_mean"]!.flatNumbers)
        XCTAssertEqual(contract.pixelStd, c["pixel_std"]!.flatNumbers)
        XCTAssertEqual(contract.padValueRaw, c["pad_value_raw"]!.flatNumbers)
        XCTAssertEqual(contract.lowResMaskSize, c["low_res_mask_size"]!.intValue)
        XCTAssertEqual(contract.multimaskSlice.count, 3)
        XCTAssertEqual(contract.singleMaskSlice.count, 1)
        XCTAssertEqual(contract.inputs["decoder"], ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"])
        XCTAssertTrue(Set(contract.inputs["decoder_cached"]!).isSuperset(of: contract.inputs["decoder"]!))
        XCTAssertEqual(contract.bundle.formatExtensions["coreml"], ".mlpackage")
        XCTAssertEqual(contract.bundle.parts, ["encoder", "decoder"])
        let cache = try XCTUnwrap(contract.imageCache)
        XCTAssertEqual(cache.inputs.count, cache.outputs.count)
        for (i, o) in cache.outputs.enumerated() { XCTAssertTrue(cache.inputs[i].hasSuffix(o)) }
        XCTAssertFalse(contract.inputs["decoder"]!.contains(cache.flag))
    }

    func testContractMistakesAreNamed() {
        func refused(_ text: String, _ fragment: String) {
            XCTAssertThrowsError(try Contract.parse(Data(text.utf8))) { e in
                XCTAssertTrue("\(e)".contains(fragment), "\"\(e)\" does not say \"\(fragment)\"")
            }
        }
        refused("{", "not valid JSON")
        refused("{\"graphs\": {}}", "constants is missing")
        refused("{\"constants\": {\"spec_version\": 2}}", "spec_version must be a string")
        refused("{\"constants\": {\"spec_version\": \"2\"}}", "image_size is missing")
        // the real file, each time with one thing taken out
        let text = try! String(contentsOf: Golden.dir.appendingPathComponent("contract.json"), encoding: .utf8)
        for (cut, fragment) in [("\"pad\": -1,", "pad is missing"), ("\"bundle\":", "bundle is missing"),
                                ("\"low_res_mask_size\": 256,", "low_res_mask_size is missing")] {
            XCTAssertTrue(text.contains(cut), cut)
            refused(text.replacingOccurrences(of: cut, with: cut.hasSuffix(":") ? "\"elsewhere\":" : ""), fragment)
        }
    }

    func testResizeIsBitExactWithUpstream() throws {
        for image in Golden.images {
            let name = Golden.name(image)
            let rgb = try Golden.photo(image)
            XCTAssertEqual(Sha256.hex(rgb.data), image["image_sha256"]!.stringValue, "\(name): the photo is the array upstream saw")
            let original = Golden.size(image["original_size"])
            XCTAssertEqual(rgb.size, original)
            XCTAssertEqual(Transforms.preprocessShape(original, longSide: contract.imageSize), Golden.size(image["input_size"]), name)
            let resized = Transforms.resizeLongestSide(rgb, longSide: contract.imageSize)
            XCTAssertEqual(Sha256.hex(resized.data), image["resized_sha256"]!.stringValue, "\(name): resized image (PIL bilinear)")
            let input = Transforms.encoderInput(rgb, contract: contract)
            XCTAssertEqual(input.inputSize, Golden.size(image["input_size"]))
            let s = contract.imageSize
            for c in 0..<3 {
                for y in [0, input.inputSize.h - 1] {
                    for x in [0, input.inputSize.w - 1] {
                        XCTAssertEqual(input.pixels[(c * s + y) * s + x], Float(resized[y, x, c]), "\(name): pixel")
                    }
                }
                if input.inputSize.h < s || input.inputSize.w < s {  // bottom-right corner: the pixel mean
                    XCTAssertEqual(input.pixels[(c * s + s - 1) * s + s - 1], Float(contract.padValueRaw[c]), "\(name): padding")
                }
            }
        }
    }

    /// PIL widens its bilinear filter when it downscales (it antialiases); the golden photos are all upscaled, so
    /// the runner passes a larger image and the sha256 of PIL's resize of it (POCKETSAM_WORK/downscale.npy and
    /// downscale.sha256, made by tests/test_ios_demo.py).
    func testDownscaleIsBitExactWithPil() throws {
        guard let work = Golden.work,
              FileManager.default.fileExists(atPath: work.appendingPathComponent("downscale.npy").path) else {
            throw XCTSkip("no downscale case given (POCKETSAM_WORK/downscale.npy: tests/test_ios_demo.py makes one)")
        }
        let a = try NpyArray.read(work.appendingPathComponent("downscale.npy"))
        let want = try String(contentsOf: work.appendingPathComponent("downscale.sha256"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let rgb = try RgbImage(h: a.shape[0], w: a.shape[1], data: a.bytes)
        XCTAssertGreaterThan(max(rgb.h, rgb.w), contract.imageSize, "the case must downscale")
        XCTAssertEqual(Sha256.hex(Transforms.resizeLongestSide(rgb, longSide: contract.imageSize).data), want,
                       "downscaled \(rgb.h)x\(rgb.w)")
    }

    func testCoordinatesAreBitEqualToUpstream() throws {
        for image in Golden.images {
            let name = Golden.name(image)
            let original = Golden.size(image["original_size"])
            var cases: [(String, [Float], [Float])] = []
            for key in ["coords", "boxes"] {
                let c = image[key]!
                cases.append((key, Transforms.applyCoords(Golden.doubles(c["input"]), original: original, longSide: contract.imageSize),
                              Golden.floats32(c["transformed"])))
            }
            let batch = image["batch"]!
            cases.append(("batch", Transforms.applyBoxes(Golden.doubles(batch["boxes"]), original: original, longSide: contract.imageSize),
                          Golden.floats32(batch["boxes_transformed"])))
            for (what, ours, want) in cases {
                XCTAssertGreaterThan(want.count, 0)
                // bit-equal: compare the bit patterns (== would also accept -0 for 0)
                XCTAssertEqual(ours.map(\.bitPattern), want.map(\.bitPattern), "\(name) \(what)")
            }
        }
    }

    func testPromptTokensAreUpstreams() throws {
        var n = 0
        for image in Golden.images {
            let original = Golden.size(image["original_size"])
            for p in Golden.prompts(image) {
                let what = "\(Golden.name(image))/\(p["name"]!.stringValue!)"
                let tokens = try Golden.prompt(p).decoderTokens(original: original, contract: contract)
                let want = Golden.upstreamTokens(p)
                XCTAssertEqual(tokens.coords.map(\.bitPattern), want.coords.map(\.bitPattern), what)
                XCTAssertEqual(tokens.labels, want.labels, what)
                let fixed = try Golden.prompt(p).decoderTokens(original: original, contract: contract, decoderPoints: 6)
                XCTAssertEqual(fixed.count, 6, what)
                XCTAssertEqual(Array(fixed.labels.prefix(want.count)), want.labels, what)
                XCTAssertTrue(fixed.labels.dropFirst(want.count).allSatisfy { $0 == Float(contract.labels.pad) }, what)
                n += 1
            }
        }
        XCTAssertEqual(n, 4 * 7)
    }

    func testMasksFromUpstreamLogitsMatchUpstreamMasks() throws {
        let bound = Golden.maskIouBound
        var worst = 1.0
        var cases = 0
        for image in Golden.images {
            let name = Golden.name(image)
            let original = Golden.size(image["original_size"])
            let inputSize = Golden.size(image["input_size"])
            let post = MaskPostprocessor(inputSize: inputSize, original: original, contract: contract)
            for p in Golden.prompts(image) + [image["batch"]!] {
                let key = p["name"]!.stringValue!
                let shape = Golden.doubles(p["masks_shape"]).map { Int($0) }
                let count = shape.dropLast(2).reduce(1, *)
                // the golden logits are float16 (to keep the files small): boundary pixels within its rounding of 0
                // may flip, which the IoU bound allows
                let logits = try Golden.npy(image, "\(key).low_res_logits")!.floats()
                let masks = Transforms.threshold(try post.toOriginalFrame(logits, count: count), contract: contract)
                let want = try Golden.npy(image, "\(key).masks")!.unpackBits(masks.count)
                let v = Golden.iou(masks, want)
                worst = min(worst, v)
                XCTAssertGreaterThanOrEqual(v, bound, "\(name)/\(key): mask IoU")
                cases += 1
                // the one-off form agrees with the kept post-processor
                if key == "point" {
                    let once = try Transforms.postprocessMasks(logits, count: count, inputSize: inputSize, original: original, contract: contract)
                    XCTAssertEqual(Transforms.threshold(once, contract: contract), masks)
                }
            }
        }
        XCTAssertEqual(cases, 4 * 8)
        print("masks from upstream's low-res logits: worst mask IoU \(worst) over \(cases) cases (bound >= \(bound))")
    }

    func testHalfFloatsDecodeExactly() {
        XCTAssertEqual(halfToFloat(0x3c00), 1.0)
        XCTAssertEqual(halfToFloat(0xc000), -2.0)
        XCTAssertEqual(halfToFloat(0x7bff), 65504)
        XCTAssertEqual(halfToFloat(0x0001), 5.9604645e-8)  // smallest subnormal
        XCTAssertEqual(halfToFloat(0x03ff), 6.097555e-5)  // largest subnormal
        XCTAssertTrue(halfToFloat(0x7c00).isInfinite)
    }

    func testSha256MatchesTheStandardsVectors() {
        // FIPS 180-4 examples, and lengths around the 56-byte padding boundary (Python's hashlib, below)
        XCTAssertEqual(Sha256.hex([UInt8]()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(Sha256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(Sha256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(Sha256.hex([UInt8](repeating: 0x61, count: 1_000_000)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        var streamed = Sha256()
        for chunk in stride(from: 0, to: 200, by: 7) { streamed.update((chunk..<min(chunk + 7, 200)).map { UInt8($0) }) }
        XCTAssertEqual(streamed.hexDigest(), Sha256.hex((0..<200).map { UInt8($0) }))
        // hashlib.sha256(bytes(range(n))).hexdigest() for n = 55, 56, 64
        XCTAssertEqual(Sha256.hex((0..<55).map { UInt8($0) }), "463eb28e72f82e0a96c0a4cc53690c571281131f672aa229e0d45ae59b598b59")
        XCTAssertEqual(Sha256.hex((0..<56).map { UInt8($0) }), "da2ae4d6b36748f2a318f23e7ab1dfdf45acdc9d049bd80e59de82a60895f562")
        XCTAssertEqual(Sha256.hex((0..<64).map { UInt8($0) }), "fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108")
    }
}
