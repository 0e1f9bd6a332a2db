import Foundation
import PocketSAMCore
import XCTest

/// Replays the golden embedding of one image, checking the encoder input it is given.
private final class ReplayEncoder: Engine {
    let inputNames = try! Golden.contract.inputsOf("encoder")
    let outputNames = try! Golden.contract.outputsOf("encoder")
    let embedding: FloatTensor
    let inputSize: Size
    var calls = 0

    init(embedding: FloatTensor, inputSize: Size) {
        self.embedding = embedding
        self.inputSize = inputSize
    }

    func run(_ feeds: [String: FloatTensor]) throws -> [String: FloatTensor] {
        calls += 1
        let c = Golden.contract
        let x = feeds[inputNames[0]]!
        let s = c.imageSize
        XCTAssertEqual(x.shape, [1, 3, s, s])
        if inputSize.w < s {  // right of the resized image: the pixel mean, per channel
            for ch in 0..<3 { XCTAssertEqual(x.data[(ch * s + 0) * s + s - 1], Float(c.padValueRaw[ch])) }
        }
        return [outputNames[0]: embedding]
    }
}

/// One expected decoder call: its tokens (what upstream's PromptEncoder saw), mask input, and the golden outputs
/// (count masks of the multimask or single-mask slice; the other slots get values that would fail the test).
private struct Expected {
    let tokens: [DecoderTokens]
    let maskInput: [Float]?
    let lowRes: [Float]
    let scores: [Float]
    let multimask: Bool
}

/// Replays the golden low-res logits and scores of the expected call, after checking its feeds bit for bit.
private final class ReplayDecoder: Engine {
    let inputNames = try! Golden.contract.inputsOf("decoder")
    let outputNames = try! Golden.contract.outputsOf("decoder")
    let embedding: FloatTensor
    var expected: Expected?

    init(embedding: FloatTensor) { self.embedding = embedding }

    func run(_ feeds: [String: FloatTensor]) throws -> [String: FloatTensor] {
        let c = Golden.contract
        guard let e = expected else { XCTFail("an unexpected decoder call"); throw PocketSAMError.engine("unexpected") }
        expected = nil
        XCTAssertEqual(Set(feeds.keys), Set(inputNames))
        let (emb, coords, labels, mask, hasMask) = (feeds[inputNames[0]]!, feeds[inputNames[1]]!, feeds[inputNames[2]]!,
                                                    feeds[inputNames[3]]!, feeds[inputNames[4]]!)
        XCTAssertEqual(emb, embedding, "the embedding the encoder returned")
        let b = e.tokens.count, n = e.tokens[0].count, l = c.lowResMaskSize, k = c.numMaskOutputs
        XCTAssertEqual(coords.shape, [b, n, 2])
        XCTAssertEqual(labels.shape, [b, n])
        XCTAssertEqual(coords.data.map(\.bitPattern), e.tokens.flatMap(\.coords).map(\.bitPattern), "coords")
        XCTAssertEqual(labels.data, e.tokens.flatMap(\.labels), "labels")
        XCTAssertEqual(mask.shape, [b, 1, l, l])
        XCTAssertEqual(hasMask.data, [Float](repeating: e.maskInput != nil ? 1 : 0, count: b))
        XCTAssertEqual(mask.data, e.maskInput ?? [Float](repeating: 0, count: b * l * l))
        // all 4 outputs: the golden ones in their slice, elsewhere logits of +-100 and scores of 99
        let slice = e.multimask ? c.multimaskSlice : c.singleMaskSlice
        let cnt = slice.count
        var lowRes = (0..<(b * k * l * l)).map { ($0 / (l * l)) % 2 == 0 ? Float(100) : Float(-100) }
        var iou = [Float](repeating: 99, count: b * k)
        for i in 0..<b {
            let dst = (i * k + slice.lowerBound) * l * l
            lowRes.replaceSubrange(dst..<(dst + cnt * l * l), with: e.lowRes[(i * cnt * l * l)..<((i + 1) * cnt * l * l)])
            iou.replaceSubrange((i * k + slice.lowerBound)..<(i * k + slice.lowerBound + cnt), with: e.scores[(i * cnt)..<((i + 1) * cnt)])
        }
        return [outputNames[0]: try FloatTensor(shape: [b, k, l, l], data: lowRes),
                outputNames[1]: try FloatTensor(shape: [b, k], data: iou)]
    }
}

/// A `SegmentSession` driven by engines that replay the golden embedding and low-res logits (made by UPSTREAM
/// segment-anything / MobileSAM) gives the golden masks: every prompt kind of every golden photo, through the
/// session's own prompt tokens, mask-input feeds, output slicing and post-processing. The decoder checks its feeds
/// against upstream's tokens bit for bit.
final class SegmentSessionTests: XCTestCase {
    let contract = Golden.contract

    func testReplayedGoldenEnginesGiveTheGoldenMasks() throws {
        let bound = Golden.maskIouBound
        var worst = 1.0
        var cases = 0
        for image in Golden.images {
            let name = Golden.name(image)
            let emb = try Golden.npy(image, "embedding")!
            let embedding = try FloatTensor(shape: emb.shape, data: emb.floats())
            let inputSize = Golden.size(image["input_size"])
            let encoder = ReplayEncoder(embedding: embedding, inputSize: inputSize)
            let decoder = ReplayDecoder(embedding: embedding)
            let session = try SegmentSession(encoder: encoder, decoder: decoder, contract: contract)
            XCTAssertFalse(session.usesImageCache)
            var stages: [String] = []
            try session.setImage(try Golden.photo(image)) { stages.append($0) }
            XCTAssertEqual(stages, ["resize", "encoder", "post-processing"])
            XCTAssertEqual(encoder.calls, 1)
            XCTAssertEqual(session.originalSize, Golden.size(image["original_size"]))
            XCTAssertEqual(session.inputSize, inputSize)

            for p in Golden.prompts(image) {
                let key = p["name"]!.stringValue!
                let multimask = p["multimask_output"]!.boolValue!
                let maskInput = try Golden.npy(image, "\(key).mask_input")?.floats()
                decoder.expected = Expected(tokens: [Golden.upstreamTokens(p)], maskInput: maskInput,
                                            lowRes: try Golden.npy(image, "\(key).low_res_logits")!.floats(),
                                            scores: Golden.floats32(p["scores"]), multimask: multimask)
                let r = try session.predict(try Golden.prompt(p), maskInput: maskInput, multimask: multimask)
                XCTAssertNil(decoder.expected, "\(name)/\(key): the decoder ran once")
                worst = min(worst, try check("\(name)/\(key)", r, p, image, key, bound))
                cases += 1
            }

            // the batch: 3 boxes in one decoder run (SamPredictor.predict_torch)
            let batch = image["batch"]!
            let boxes = Golden.doubles(batch["boxes"])
            let prompts = try stride(from: 0, to: boxes.count, by: 4).map { try Prompt(box: Array(boxes[$0..<($0 + 4)])) }
            let transformed = Golden.floats32(batch["boxes_transformed"])
            let lab = contract.labels
            let tokens = prompts.indices.map {
                DecoderTokens(coords: Array(transformed[($0 * 4)..<($0 * 4 + 4)]),
                              labels: [Float(lab.boxTopLeft), Float(lab.boxBottomRight)])
            }
            decoder.expected = Expected(tokens: tokens, maskInput: nil,
                                        lowRes: try Golden.npy(image, "batch_boxes.low_res_logits")!.floats(),
                                        scores: Golden.floats32(batch["scores"]), multimask: batch["multimask_output"]!.boolValue!)
            let results = try session.predictBatch(prompts, multimask: true)
            XCTAssertEqual(results.count, prompts.count)
            let ours = results.flatMap(\.masks)
            let want = try Golden.npy(image, "batch_boxes.masks")!.unpackBits(ours.count)
            let v = Golden.iou(ours, want)
            XCTAssertGreaterThanOrEqual(v, bound, "\(name)/batch_boxes: mask IoU")
            worst = min(worst, v)
            cases += 1
            // the PNG the app saves of the best mask of the first click: tests/test_ios_demo.py decodes it with PIL
            if let out = Golden.out, name == "chelsea" {
                decoder.expected = Expected(tokens: [Golden.upstreamTokens(Golden.prompts(image)[0])], maskInput: nil,
                                            lowRes: try Golden.npy(image, "point.low_res_logits")!.floats(),
                                            scores: Golden.floats32(Golden.prompts(image)[0]["scores"]), multimask: true)
                let r = try session.predict(try Golden.prompt(Golden.prompts(image)[0]))
                try MaskImage.png(r.mask(r.bestIndex), size: r.size).write(to: out.appendingPathComponent("mask-chelsea-point.png"))
            }
        }
        XCTAssertEqual(cases, 4 * 8)
        print("SegmentSession over replayed golden engines: worst mask IoU \(worst) over \(cases) cases (bound >= \(bound))")
    }

    private func check(_ what: String, _ r: Prediction, _ p: JSON, _ image: JSON, _ key: String, _ bound: Double) throws -> Double {
        let shape = Golden.doubles(p["masks_shape"]).map { Int($0) }
        XCTAssertEqual(r.count, shape[0], what)
        XCTAssertEqual(r.size, Size(h: shape[1], w: shape[2]), what)
        XCTAssertEqual(r.scores, Golden.floats32(p["scores"]), what)
        XCTAssertEqual(r.bestIndex, p["best_index"]!.intValue, what)
        XCTAssertEqual(r.lowResLogits, try Golden.npy(image, "\(key).low_res_logits")!.floats(), what)
        let want = try Golden.npy(image, "\(key).masks")!.unpackBits(r.masks.count)
        let v = Golden.iou(r.masks, want)
        XCTAssertGreaterThanOrEqual(v, bound, "\(what): mask IoU")
        return v
    }
}

/// An encoder that returns a tiny stand-in embedding (the session passes it on untouched).
private final class TinyEncoder: Engine {
    let inputNames = try! Golden.contract.inputsOf("encoder")
    let outputNames = try! Golden.contract.outputsOf("encoder")
    var calls = 0
    func run(_ feeds: [String: FloatTensor]) throws -> [String: FloatTensor] {
        calls += 1
        return [outputNames[0]: try FloatTensor(shape: [1, 1], data: [Float(calls)])]
    }
}

/// A decoder that records its feeds and answers with masks that cover the whole image (logits 1) and scores 0.1,
/// 0.2, 0.3, 0.4; with `cached` it has the image-cache I/O and returns small cache tensors numbered by call.
private final class RecordingDecoder: Engine {
    let graph: String
    let inputNames: [String]
    let outputNames: [String]
    var calls: [[String: FloatTensor]] = []

    init(cached: Bool) {
        graph = cached ? "decoder_cached" : "decoder"
        inputNames = try! Golden.contract.inputsOf(graph)
        outputNames = try! Golden.contract.outputsOf(graph)
    }

    func run(_ feeds: [String: FloatTensor]) throws -> [String: FloatTensor] {
        let c = Golden.contract
        calls.append(feeds)
        XCTAssertEqual(Set(feeds.keys), Set(inputNames))
        let b = feeds["point_labels"]!.shape[0], l = c.lowResMaskSize, k = c.numMaskOutputs
        var out: [String: FloatTensor] = [
            outputNames[0]: FloatTensor.filled([b, k, l, l], 1),
            outputNames[1]: try FloatTensor(shape: [b, k], data: (0..<(b * k)).map { 0.1 * Float($0 % k + 1) }),
        ]
        if graph == "decoder_cached" {
            let cache = c.imageCache!
            let computes = feeds[cache.flag]!.data[0] == 0
            for name in cache.outputs {
                out[name] = computes ? FloatTensor.filled([b, 2], Float(calls.count)) : FloatTensor.filled([0, 2])
            }
        }
        return out
    }
}

/// The session's own behaviour: the optional image cache, fixed-shape decoders, and every bad input refused with a
/// `PocketSAMError` (the app shows its message).
final class SessionBehaviourTests: XCTestCase {
    let contract = Golden.contract
    let image = try! RgbImage(h: 20, w: 30, data: (0..<(20 * 30 * 3)).map { UInt8($0 % 251) })
    lazy var click = try! Prompt(points: [15, 10], labels: [contract.labels.foreground])

    func testImageCacheIsComputedOnTheFirstClickKeptAndFedBack() throws {
        let decoder = RecordingDecoder(cached: true)
        let session = try SegmentSession(encoder: TinyEncoder(), decoder: decoder, contract: contract)
        XCTAssertTrue(session.usesImageCache)
        let cache = contract.imageCache!
        try session.setImage(image)
        let first = try session.predict(click)
        XCTAssertEqual(first.count, 3)
        XCTAssertEqual(first.size, Size(h: 20, w: 30))
        XCTAssertTrue(first.masks.allSatisfy { $0 }, "logits 1 everywhere: the whole image")
        XCTAssertEqual(first.scores, [0.2, 0.3, 0.4])
        XCTAssertEqual(first.bestIndex, 2)
        _ = try session.predict(click, multimask: false)
        _ = try session.predict(click, maskInput: first.lowRes(first.bestIndex), multimask: false)
        _ = try session.predict(click)
        try session.setImage(image)
        _ = try session.predict(click)

        let flags = decoder.calls.map { $0[cache.flag]!.data[0] }
        // 1st click computes; 2nd reads; a mask input computes again, not kept; the 4th reads the 1st's; new image
        XCTAssertEqual(flags, [0, 1, 0, 1, 0])
        for i in [0, 2, 4] {
            for (j, name) in cache.inputs.enumerated() { XCTAssertEqual(decoder.calls[i][name]!.shape, [0] + cache.rowShapes[j]) }
        }
        for i in [1, 3] {
            for name in cache.inputs {
                XCTAssertEqual(decoder.calls[i][name]!.shape, [1, 2])
                XCTAssertEqual(decoder.calls[i][name]!.data, [1, 1], "the first click's cache")
            }
        }
        XCTAssertEqual(decoder.calls[2]["has_mask_input"]!.data, [1])
        XCTAssertEqual(decoder.calls[3]["has_mask_input"]!.data, [0])
    }

    func testPlainDecoderGetsNoCacheInputs() throws {
        let decoder = RecordingDecoder(cached: false)
        let session = try SegmentSession(encoder: TinyEncoder(), decoder: decoder, contract: contract)
        XCTAssertFalse(session.usesImageCache)
        try session.setImage(image)
        _ = try session.predict(click)
        _ = try session.predict(click)
        XCTAssertEqual(decoder.calls.count, 2)
        XCTAssertTrue(decoder.calls.allSatisfy { Set($0.keys) == Set(contract.inputs["decoder"]!) })
    }

    func testFixedShapeDecoderGetsPaddedTokens() throws {
        let decoder = RecordingDecoder(cached: false)
        let session = try SegmentSession(encoder: TinyEncoder(), decoder: decoder, contract: contract, decoderPoints: 6)
        try session.setImage(image)
        _ = try session.predict(try Prompt(box: [2, 3, 20, 15]))
        let labels = decoder.calls[0]["point_labels"]!
        XCTAssertEqual(labels.shape, [1, 6])
        let lab = contract.labels
        XCTAssertEqual(labels.data, [Float(lab.boxTopLeft), Float(lab.boxBottomRight)] + [Float](repeating: Float(lab.pad), count: 4))
        XCTAssertEqual(decoder.calls[0]["point_coords"]!.shape, [1, 6, 2])
        // 5 clicks + the pad point need 6 tokens: fine; 6 clicks need 7
        _ = try session.predict(try Prompt(points: [Double](repeating: 5, count: 10), labels: [Int](repeating: lab.foreground, count: 5)))
        expect(.prompt(""), "needs 7 decoder points but the decoder takes 6") {
            _ = try session.predict(try Prompt(points: [Double](repeating: 5, count: 12), labels: [Int](repeating: lab.foreground, count: 6)))
        }
    }

    func testBadInputsAreRefusedWithAMessage() throws {
        let session = try SegmentSession(encoder: TinyEncoder(), decoder: RecordingDecoder(cached: false), contract: contract)
        expect(.imageNotSet(""), "must be set") { _ = try session.predict(self.click) }
        try session.setImage(image)
        let fg = contract.labels.foreground
        expect(.prompt(""), "inside the 20x30 image") { _ = try session.predict(try Prompt(points: [31, 5], labels: [fg])) }
        expect(.prompt(""), "inside the 20x30 image") { _ = try session.predict(try Prompt(points: [5, -1], labels: [fg])) }
        expect(.prompt(""), "inside the 20x30 image") { _ = try session.predict(try Prompt(points: [.nan, 5], labels: [fg])) }
        expect(.prompt(""), "x0 <= x1") { _ = try session.predict(try Prompt(box: [20, 3, 2, 15])) }
        expect(.prompt(""), "give a prompt") { _ = try session.predict(try Prompt()) }
        expect(.prompt(""), "256 x 256") { _ = try session.predict(self.click, maskInput: [Float](repeating: 0, count: 10)) }
        expect(.prompt(""), "finite") { _ = try session.predict(self.click, maskInput: [Float](repeating: .nan, count: 256 * 256)) }
        expect(.prompt(""), "not a point label") { _ = try session.predict(try Prompt(points: [5, 5], labels: [7])) }
        expect(.prompt(""), "2 points but 1 labels") { _ = try Prompt(points: [1, 2, 3, 4], labels: [fg]) }
        expect(.prompt(""), "4 numbers") { _ = try Prompt(box: [1, 2, 3]) }
        expect(.prompt(""), "same number of decoder tokens") {
            _ = try session.predictBatch([self.click, try Prompt(points: [2, 2], labels: [fg], box: [1, 1, 5, 5])])
        }
        // the border is inside (pixel-corner coordinates), as in the Python runtime
        _ = try session.predict(try Prompt(points: [30, 20], labels: [fg]))
        // a mask-only prompt: no tokens at all
        let r = try session.predict(try Prompt(), maskInput: [Float](repeating: 0, count: 256 * 256))
        XCTAssertEqual(r.count, 3)
        // images the encoder cannot take
        expect(.image(""), "at least 2x2") { try session.setImage(try RgbImage(h: 1, w: 5, data: [UInt8](repeating: 0, count: 15))) }
        XCTAssertFalse(session.isImageSet, "a refused image leaves none set")
        expect(.image(""), "shrink to 0 pixels") { try session.setImage(try RgbImage(h: 2, w: 5000, data: [UInt8](repeating: 0, count: 30000))) }
        expect(.image(""), "needs 18 bytes") { _ = try RgbImage(h: 2, w: 3, data: [1, 2, 3]) }
    }

    func testEnginesOfAnotherGraphAreRefused() throws {
        // an encoder file given as the decoder: the session says so before any click
        expect(.bundle(""), "not pocketsam's decoder I/O") {
            _ = try SegmentSession(encoder: TinyEncoder(), decoder: TinyEncoder(), contract: self.contract)
        }
    }

    func testFailingEncoderLeavesNoStaleImage() throws {
        final class Failing: Engine {
            let inputNames = try! Golden.contract.inputsOf("encoder")
            let outputNames = try! Golden.contract.outputsOf("encoder")
            var fail = false
            func run(_ feeds: [String: FloatTensor]) throws -> [String: FloatTensor] {
                if fail { throw PocketSAMError.engine("the Neural Engine refused the model") }
                return [outputNames[0]: FloatTensor.filled([1, 1])]
            }
        }
        let encoder = Failing()
        let session = try SegmentSession(encoder: encoder, decoder: RecordingDecoder(cached: false), contract: contract)
        try session.setImage(image)
        XCTAssertTrue(session.isImageSet)
        encoder.fail = true
        expect(.engine(""), "refused the model") { try session.setImage(self.image) }
        XCTAssertFalse(session.isImageSet)
        XCTAssertNil(session.originalSize)
        expect(.imageNotSet(""), "must be set") { _ = try session.predict(self.click) }
    }

    func testDecoderOutputsOfTheWrongShapeAreAnEngineError() throws {
        final class Wrong: Engine {
            let inputNames = try! Golden.contract.inputsOf("decoder")
            let outputNames = try! Golden.contract.outputsOf("decoder")
            func run(_ feeds: [String: FloatTensor]) throws -> [String: FloatTensor] {
                [outputNames[0]: FloatTensor.filled([1, 4, 128, 128]), outputNames[1]: FloatTensor.filled([1, 4])]
            }
        }
        let session = try SegmentSession(encoder: TinyEncoder(), decoder: Wrong(), contract: contract)
        try session.setImage(image)
        expect(.engine(""), "low_res_masks is 1x4x128x128, expected 1x4x256x256") { _ = try session.predict(self.click) }
    }
}

/// `body` throws a PocketSAMError of `kind`'s case whose message contains `fragment`.
func expect(_ kind: PocketSAMError, _ fragment: String, file: StaticString = #filePath, line: UInt = #line,
            _ body: () throws -> Void) {
    do {
        try body()
        XCTFail("nothing was thrown; expected \"\(fragment)\"", file: file, line: line)
    } catch let e as PocketSAMError {
        XCTAssertEqual(String(describing: e).isEmpty, false)
        XCTAssertTrue(sameCase(e, kind), "\(e) is not a \(kind) error", file: file, line: line)
        XCTAssertTrue(e.message.contains(fragment), "\"\(e.message)\" does not say \"\(fragment)\"", file: file, line: line)
    } catch {
        XCTFail("\(error) is not a PocketSAMError", file: file, line: line)
    }
}

private func sameCase(_ a: PocketSAMError, _ b: PocketSAMError) -> Bool {
    switch (a, b) {
    case (.bundle, .bundle), (.prompt, .prompt), (.imageNotSet, .imageNotSet), (.engine, .engine), (.image, .image),
         (.contract, .contract):
        return true
    default:
        return false
    }
}
