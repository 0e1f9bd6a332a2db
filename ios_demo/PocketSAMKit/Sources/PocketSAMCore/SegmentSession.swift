import Foundation

/// The masks of one prompt, as `SamPredictor.predict` returns them.
///
/// Frames: `masks` are in the original frame (the user's image, `size` = (h, w)); `lowResLogits` are in the input
/// frame scaled to `lowResSize` x `lowResSize` (pass one back as a mask input to refine a prompt).
public struct Prediction: Sendable {
    /// How many masks: 3 with multimask output, else 1.
    public let count: Int
    /// The size of every mask: the original image's.
    public let size: Size
    /// count x H x W, row-major: true where the mask is (logits > the contract's threshold).
    public let masks: [Bool]
    /// The decoder's predicted IoU of each mask.
    public let scores: [Float]
    /// count x L x L low-res logits, L = `lowResSize`.
    public let lowResLogits: [Float]
    public let lowResSize: Int

    public init(count: Int, size: Size, masks: [Bool], scores: [Float], lowResLogits: [Float], lowResSize: Int) {
        self.count = count
        self.size = size
        self.masks = masks
        self.scores = scores
        self.lowResLogits = lowResLogits
        self.lowResSize = lowResSize
    }

    /// Mask `i`, H x W row-major.
    public func mask(_ i: Int) -> [Bool] {
        let n = size.h * size.w
        return Array(masks[(i * n)..<((i + 1) * n)])
    }

    /// The low-res logits of mask `i` (L x L), a valid mask input for the next prompt on this image.
    public func lowRes(_ i: Int) -> [Float] {
        let n = lowResSize * lowResSize
        return Array(lowResLogits[(i * n)..<((i + 1) * n)])
    }

    /// The index of the mask with the highest predicted IoU (SamPredictor's users pick it this way; the first on
    /// a tie, as numpy's argmax).
    public var bestIndex: Int {
        scores.indices.reduce(0) { best, i in scores[i] > scores[best] ? i : best }
    }
}

/// pocketsam's `Predictor` over any pair of `Engine`s: set an image once (the encoder runs, its embedding is kept),
/// then predict masks for many prompts (each runs only the decoder and the post-processing kept for this image
/// size). Prompts reach the decoder as upstream's PromptEncoder sees them (`Prompt.decoderTokens`).
///
/// The image cache is optional, as in the Python runtime: a decoder whose inputs include the contract's image-cache
/// flag (ONNX bundles) computes the image-only part of its work on an image's first click and returns it; the
/// session keeps it and feeds it back on every later click of that image without a mask input. A click with a mask
/// input computes it again (the mask changes what it holds) and it is not kept. A decoder without those inputs
/// (CoreML, TFLite) runs the plain decoder I/O.
///
/// Not thread-safe: one session per worker (the app runs it on one background task at a time).
public final class SegmentSession {
    private struct ImageState {
        let embedding: FloatTensor
        let original: Size
        let inputSize: Size
        let post: MaskPostprocessor
    }

    public let encoder: Engine
    public let decoder: Engine
    public let contract: Contract
    /// The fixed point count of a fixed-shape decoder (TFLite, `BundleManifest.decoderPoints`): every prompt is
    /// padded to it with pad points. nil: the exact token count.
    public let decoderPoints: Int?

    // Graph I/O names, by position in the contract (a contract of another arity fails in init, loudly).
    private let encoderInput: String
    private let encoderOutput: String
    private let decEmbeddings: String, decCoords: String, decLabels: String, decMask: String, decHasMask: String
    private let decLowRes: String, decIou: String
    /// The image-cache I/O when this decoder takes it, else nil.
    private let cacheIO: Contract.ImageCacheIO?

    private var state: ImageState?
    private var imageCache: [String: FloatTensor]?

    public init(encoder: Engine, decoder: Engine, contract: Contract, decoderPoints: Int? = nil) throws {
        let encIn = try contract.inputsOf("encoder"), encOut = try contract.outputsOf("encoder")
        let decIn = try contract.inputsOf("decoder"), decOut = try contract.outputsOf("decoder")
        guard encIn.count == 1, encOut.count == 1, decIn.count == 5, decOut.count == 2 else {
            throw PocketSAMError.contract("contract.json: graph I/O of another spec (encoder \(encIn) -> \(encOut), "
                + "decoder \(decIn) -> \(decOut))")
        }
        if let n = decoderPoints, n < 1 { throw PocketSAMError.bundle("decoderPoints must be >= 1, got \(n)") }
        self.encoder = encoder
        self.decoder = decoder
        self.contract = contract
        self.decoderPoints = decoderPoints
        encoderInput = encIn[0]
        encoderOutput = encOut[0]
        (decEmbeddings, decCoords, decLabels, decMask, decHasMask) = (decIn[0], decIn[1], decIn[2], decIn[3], decIn[4])
        (decLowRes, decIou) = (decOut[0], decOut[1])
        if let io = contract.imageCache, decoder.inputNames.contains(io.flag) { cacheIO = io } else { cacheIO = nil }
        try SegmentSession.checkNames("encoder", encoder, encIn, encOut)
        try SegmentSession.checkNames("decoder", decoder, decIn, decOut)
    }

    private static func checkNames(_ part: String, _ engine: Engine, _ inputs: [String], _ outputs: [String]) throws {
        let missing = inputs.filter { !engine.inputNames.contains($0) } + outputs.filter { !engine.outputNames.contains($0) }
        if !missing.isEmpty {
            throw PocketSAMError.bundle("the \(part) takes \(engine.inputNames) and returns \(engine.outputNames): "
                + "not pocketsam's \(part) I/O (missing \(missing)); re-export the bundle")
        }
    }

    /// Whether this decoder takes the image cache (see the type's comment).
    public var usesImageCache: Bool { cacheIO != nil }
    public var isImageSet: Bool { state != nil }
    /// (h, w) of the current image, or nil.
    public var originalSize: Size? { state?.original }
    /// (h, w) of the resized image inside the input frame, or nil.
    public var inputSize: Size? { state?.inputSize }

    /// The current image's embedding (1 x 256 x 64 x 64 for MobileSAM).
    public func embedding() throws -> FloatTensor { try requireImage("to get its embedding").embedding }

    /// Forget the current image, its embedding and the decoder's image cache.
    public func reset() {
        state = nil
        imageCache = nil
    }

    /// Run the encoder on `image` and keep its embedding for `predict`. The image is forgotten first: a failing
    /// encoder leaves no stale embedding behind. `stage` is told what runs now ("resize", "encoder",
    /// "post-processing"), for a progress indicator.
    public func setImage(_ image: RgbImage, stage: (String) -> Void = { _ in }) throws {
        reset()
        try Transforms.validate(image, longSide: contract.imageSize)
        stage("resize")
        let input = Transforms.encoderInput(image, contract: contract)
        let s = contract.imageSize
        stage("encoder")
        let out = try encoder.run([encoderInput: try FloatTensor(shape: [1, 3, s, s], data: input.pixels)])
        guard let embedding = out[encoderOutput] else {
            throw PocketSAMError.engine("the encoder returned no \(encoderOutput)")
        }
        stage("post-processing")
        state = ImageState(embedding: embedding, original: image.size, inputSize: input.inputSize,
                           post: MaskPostprocessor(inputSize: input.inputSize, original: image.size, contract: contract))
    }

    /// The masks for one prompt on the current image (SamPredictor.predict).
    ///
    /// - Parameters:
    ///   - maskInput: L x L low-res logits of an earlier prediction on this image (`Prediction.lowRes`), or nil.
    ///   - multimask: three masks (the multimask outputs) instead of one (the single-mask output).
    public func predict(_ prompt: Prompt, maskInput: [Float]? = nil, multimask: Bool = true) throws -> Prediction {
        try predictBatch([prompt], maskInputs: maskInput.map { [$0] }, multimask: multimask)[0]
    }

    /// The masks for B prompts in ONE decoder run (SamPredictor.predict_torch): every prompt must make the same
    /// number of decoder tokens (e.g. B boxes, or B prompts of N points each); `maskInputs`, when given, one per
    /// prompt. Result b equals `predict` on prompt b.
    public func predictBatch(_ prompts: [Prompt], maskInputs: [[Float]]? = nil, multimask: Bool = true) throws -> [Prediction] {
        let image = try requireImage("before mask prediction")
        if prompts.isEmpty { throw PocketSAMError.prompt("give at least one prompt") }
        let l = contract.lowResMaskSize
        if let masks = maskInputs {
            guard masks.count == prompts.count else {
                throw PocketSAMError.prompt("give one mask input per prompt (\(prompts.count)), got \(masks.count)")
            }
            for m in masks {
                guard m.count == l * l else {
                    throw PocketSAMError.prompt("a mask input is \(l) x \(l) low-res logits, got \(m.count) values")
                }
                guard m.allSatisfy({ $0.isFinite }) else { throw PocketSAMError.prompt("a mask input must hold finite logits") }
            }
        }
        for p in prompts {
            try checkInside(p, image.original)
            if !p.hasTokens && maskInputs == nil {
                throw PocketSAMError.prompt("give a prompt: points, a box, or a mask input")
            }
        }
        let tokens = try prompts.map { try $0.decoderTokens(original: image.original, contract: contract, decoderPoints: decoderPoints) }
        if tokens.contains(where: { $0.count != tokens[0].count }) {
            throw PocketSAMError.prompt("the prompts of one batch must make the same number of decoder tokens, got \(tokens.map(\.count))")
        }
        return try decode(image, tokens, maskInputs, multimask)
    }

    private func requireImage(_ what: String) throws -> ImageState {
        guard let s = state else { throw PocketSAMError.imageNotSet("An image must be set with setImage(...) \(what).") }
        return s
    }

    /// Points and box corners must lie in [0, W] x [0, H] (pixel-corner coordinates, the border included).
    private func checkInside(_ prompt: Prompt, _ original: Size) throws {
        func check(_ x: Double, _ y: Double, _ what: String) throws {
            if !(x >= 0 && x <= Double(original.w) && y >= 0 && y <= Double(original.h)) {
                throw PocketSAMError.prompt("\(what) must lie inside the \(original.h)x\(original.w) image, x in "
                    + "[0, \(original.w)] and y in [0, \(original.h)], got (x, y) = (\(x), \(y))")
            }
        }
        for i in prompt.labels.indices { try check(prompt.points[2 * i], prompt.points[2 * i + 1], "a point") }
        guard let box = prompt.box else { return }
        try check(box[0], box[1], "the box's top-left corner")
        try check(box[2], box[3], "the box's bottom-right corner")
        if box[0] > box[2] || box[1] > box[3] {
            throw PocketSAMError.prompt("a box is (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
        }
    }

    /// One decoder run on B prompts' tokens (each N tokens, input frame), then the post-processing per mask.
    private func decode(_ image: ImageState, _ tokens: [DecoderTokens], _ maskInputs: [[Float]]?,
                        _ multimask: Bool) throws -> [Prediction] {
        let b = tokens.count, n = tokens[0].count, l = contract.lowResMaskSize, k = contract.numMaskOutputs
        var feeds: [String: FloatTensor] = [:]
        feeds[decEmbeddings] = image.embedding
        feeds[decCoords] = try FloatTensor(shape: [b, n, 2], data: tokens.flatMap(\.coords))
        feeds[decLabels] = try FloatTensor(shape: [b, n], data: tokens.flatMap(\.labels))
        feeds[decMask] = maskInputs.map { try! FloatTensor(shape: [b, 1, l, l], data: $0.flatMap { $0 }) }
            ?? FloatTensor.filled([b, 1, l, l])
        feeds[decHasMask] = FloatTensor.filled([b], maskInputs == nil ? 0 : 1)
        let useCache = cacheIO != nil && maskInputs == nil && imageCache != nil
        if let io = cacheIO {
            for (name, t) in cacheFeeds(io, useCache ? imageCache : nil) { feeds[name] = t }
        }
        let out = try decoder.run(feeds)
        if let io = cacheIO, !useCache, maskInputs == nil { imageCache = try keptCache(io, out) }
        let lowRes = try output(out, decLowRes, [b, k, l, l])
        let iou = try output(out, decIou, [b, k])
        let slice = multimask ? contract.multimaskSlice : contract.singleMaskSlice
        let c = slice.count
        return try (0..<b).map { i in
            let first = i * k + slice.lowerBound
            let low = Array(lowRes.data[(first * l * l)..<((first + c) * l * l)])
            let scores = Array(iou.data[first..<(first + c)])
            let logits = try image.post.toOriginalFrame(low, count: c)
            return Prediction(count: c, size: image.original, masks: Transforms.threshold(logits, contract: contract),
                              scores: scores, lowResLogits: low, lowResSize: l)
        }
    }

    private func output(_ out: [String: FloatTensor], _ name: String, _ shape: [Int]) throws -> FloatTensor {
        guard let t = out[name] else { throw PocketSAMError.engine("the decoder returned no \(name)") }
        guard t.shape == shape else {
            throw PocketSAMError.engine("the decoder's \(name) is \(t.shape.map(String.init).joined(separator: "x")), "
                + "expected \(shape.map(String.init).joined(separator: "x"))")
        }
        return t
    }

    /// The image-cache inputs: the kept tensors with the flag 1, or (`kept` nil) empty tensors with the flag 0.
    private func cacheFeeds(_ io: Contract.ImageCacheIO, _ kept: [String: FloatTensor]?) -> [String: FloatTensor] {
        var feeds: [String: FloatTensor] = [:]
        for (i, name) in io.inputs.enumerated() {
            feeds[name] = kept?[name] ?? FloatTensor.filled([0] + io.rowShapes[i])
        }
        feeds[io.flag] = FloatTensor.filled([1], kept != nil ? 1 : 0)
        return feeds
    }

    /// The cache to feed back later, from a call that computed it without a mask input (every prompt of the batch
    /// computed the same cache: its first row is kept).
    private func keptCache(_ io: Contract.ImageCacheIO, _ out: [String: FloatTensor]) throws -> [String: FloatTensor] {
        var kept: [String: FloatTensor] = [:]
        for (i, name) in io.outputs.enumerated() {
            guard let t = out[name] else { throw PocketSAMError.engine("the decoder takes the image cache but returned no \(name)") }
            guard let rows = t.shape.first, rows >= 1 else {
                throw PocketSAMError.engine("the decoder returned an empty \(name) on a first click")
            }
            let row = t.count / rows
            kept[io.inputs[i]] = try FloatTensor(shape: [1] + t.shape.dropFirst(), data: Array(t.data[0..<row]))
        }
        return kept
    }
}
