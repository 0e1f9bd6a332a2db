package org.pocketsam.core

/**
 * The masks of one prompt, as `SamPredictor.predict` returns them.
 *
 * Frames: [masks] are in the original frame (the user's image, `size` = (h, w)); [lowResLogits] are in the input
 * frame scaled to `lowResSize` x `lowResSize` (pass one back as a mask input to refine a prompt).
 */
class Prediction(
    /** How many masks: 3 with multimask output, else 1. */
    val count: Int,
    /** The size of every mask: the original image's. */
    val size: Size,
    /** count x H x W, row-major: true where the mask is (logits > the contract's threshold). */
    val masks: BooleanArray,
    /** The decoder's predicted IoU of each mask. */
    val scores: FloatArray,
    /** count x L x L low-res logits, L = `lowResSize`. */
    val lowResLogits: FloatArray,
    val lowResSize: Int
) {
    private val pixels = size.h * size.w

    /** Mask `i`, H x W row-major. */
    fun mask(i: Int): BooleanArray = masks.copyOfRange(i * pixels, (i + 1) * pixels)

    /** The low-res logits of mask `i` (L x L), a valid mask input for the next prompt on this image. */
    fun lowRes(i: Int): FloatArray {
        val l = lowResSize * lowResSize
        return lowResLogits.copyOfRange(i * l, (i + 1) * l)
    }

    /** The index of the mask with the highest predicted IoU (SamPredictor's users pick it this way). */
    val bestIndex: Int
        get() = scores.indices.fold(0) { best, i -> if (scores[i] > scores[best]) i else best }
}

/**
 * pocketsam's `Predictor` over any pair of [Engine]s: set an image once (the encoder runs, its embedding is kept),
 * then predict masks for many prompts (each runs only the decoder and the post-processing kept for this image
 * size). Prompts reach the decoder as upstream's PromptEncoder sees them ([Prompt.decoderTokens]).
 *
 * The image cache is optional, as in the Python runtime: a decoder whose inputs include the contract's image-cache
 * flag (ONNX bundles) computes the image-only part of its work on an image's first click and returns it; the
 * session keeps it and feeds it back on every later click of that image without a mask input. A click with a mask
 * input computes it again (the mask changes what it holds) and it is not kept. A decoder without those inputs
 * (TFLite) runs the plain decoder I/O.
 *
 * Not thread-safe: one session per worker thread (the app runs it on one background thread).
 *
 * @param decoderPoints the fixed point count of a fixed-shape decoder (TFLite, the manifest's
 *   `BundleManifest.decoderPoints`): every prompt is padded to it with pad points. null: the exact token count.
 */
class SegmentSession(
    val encoder: Engine,
    val decoder: Engine,
    val contract: Contract,
    val decoderPoints: Int? = null
) {
    private class ImageState(val embedding: FloatTensor, val original: Size, val inputSize: Size, val post: MaskPostprocessor)

    // Graph I/O names, by position in the contract (a contract of another arity fails here, loudly).
    private val encoderInput: String
    private val encoderOutput: String
    private val decEmbeddings: String
    private val decCoords: String
    private val decLabels: String
    private val decMask: String
    private val decHasMask: String
    private val decLowRes: String
    private val decIou: String

    /** The image-cache I/O when this decoder takes it, else null. */
    private val cacheIo: Contract.ImageCacheIo? = contract.imageCache?.takeIf { it.flag in decoder.inputNames }

    private var state: ImageState? = null
    private var imageCache: Map<String, FloatTensor>? = null

    init {
        val encIn = contract.inputsOf("encoder")
        val encOut = contract.outputsOf("encoder")
        val decIn = contract.inputsOf("decoder")
        val decOut = contract.outputsOf("decoder")
        require(encIn.size == 1 && encOut.size == 1 && decIn.size == 5 && decOut.size == 2) {
            "contract.json: graph I/O of another spec (encoder $encIn -> $encOut, decoder $decIn -> $decOut)"
        }
        encoderInput = encIn[0]; encoderOutput = encOut[0]
        decEmbeddings = decIn[0]; decCoords = decIn[1]; decLabels = decIn[2]; decMask = decIn[3]; decHasMask = decIn[4]
        decLowRes = decOut[0]; decIou = decOut[1]
        checkNames("encoder", encoder, encIn, encOut)
        checkNames("decoder", decoder, decIn, decOut)
        if (decoderPoints != null && decoderPoints < 1) throw IllegalArgumentException("decoderPoints must be >= 1")
    }

    private fun checkNames(part: String, engine: Engine, inputs: List<String>, outputs: List<String>) {
        val missing = inputs.filter { it !in engine.inputNames } + outputs.filter { it !in engine.outputNames }
        if (missing.isNotEmpty()) {
            throw BundleException("the $part takes ${engine.inputNames} and returns ${engine.outputNames}: " +
                "not pocketsam's $part I/O (missing $missing); re-export the bundle")
        }
    }

    /** Whether this decoder takes the image cache (see the class comment). */
    val usesImageCache: Boolean get() = cacheIo != null

    val isImageSet: Boolean get() = state != null

    /** (h, w) of the current image, or null. */
    val originalSize: Size? get() = state?.original

    /** (h, w) of the resized image inside the input frame, or null. */
    val inputSize: Size? get() = state?.inputSize

    /** The current image's embedding (1 x 256 x 64 x 64 for MobileSAM). */
    fun embedding(): FloatTensor = requireImage("to get its embedding").embedding

    /** Forget the current image, its embedding and the decoder's image cache. */
    fun reset() {
        state = null
        imageCache = null
    }

    /**
     * Run the encoder on `image` and keep its embedding for [predict]. The image is forgotten first: a failing
     * encoder leaves no stale embedding behind. `stage` is told what runs now ("resize", "encoder",
     * "post-processing"), for a progress indicator.
     */
    fun setImage(image: RgbImage, stage: (String) -> Unit = {}) {
        reset()
        stage("resize")
        val input = Transforms.encoderInput(image, contract)
        val s = contract.imageSize
        stage("encoder")
        val out = encoder.run(mapOf(encoderInput to FloatTensor(intArrayOf(1, 3, s, s), input.pixels)))
        val embedding = out[encoderOutput] ?: throw EngineException("the encoder returned no $encoderOutput")
        stage("post-processing")
        val original = Size(image.h, image.w)
        state = ImageState(embedding, original, input.inputSize, MaskPostprocessor(input.inputSize, original, contract))
    }

    /**
     * The masks for one prompt on the current image (SamPredictor.predict).
     *
     * @param maskInput L x L low-res logits of an earlier prediction on this image ([Prediction.lowRes]), or null.
     * @param multimask three masks (the multimask outputs) instead of one (the single-mask output).
     */
    fun predict(prompt: Prompt, maskInput: FloatArray? = null, multimask: Boolean = true): Prediction =
        predictBatch(listOf(prompt), if (maskInput == null) null else listOf(maskInput), multimask)[0]

    /**
     * The masks for B prompts in ONE decoder run (SamPredictor.predict_torch): every prompt must make the same
     * number of decoder tokens (e.g. B boxes, or B prompts of N points each); `maskInputs`, when given, one per
     * prompt. Result b equals [predict] on prompt b.
     */
    fun predictBatch(prompts: List<Prompt>, maskInputs: List<FloatArray>? = null, multimask: Boolean = true): List<Prediction> {
        val image = requireImage("before mask prediction")
        if (prompts.isEmpty()) throw PromptException("give at least one prompt")
        val l = contract.lowResMaskSize
        if (maskInputs != null) {
            if (maskInputs.size != prompts.size) throw PromptException("give one mask input per prompt (${prompts.size}), got ${maskInputs.size}")
            for (m in maskInputs) {
                if (m.size != l * l) throw PromptException("a mask input is $l x $l low-res logits, got ${m.size} values")
                if (m.any { !it.isFinite() }) throw PromptException("a mask input must hold finite logits")
            }
        }
        for (p in prompts) {
            checkInside(p, image.original)
            if (!p.hasTokens && maskInputs == null) throw PromptException("give a prompt: points, a box, or a mask input")
        }
        val tokens = prompts.map {
            try {
                it.decoderTokens(image.original, contract, decoderPoints)
            } catch (e: IllegalArgumentException) {
                throw PromptException(e.message ?: "this prompt cannot be given to the decoder")
            }
        }
        if (tokens.any { it.count != tokens[0].count }) {
            throw PromptException("the prompts of one batch must make the same number of decoder tokens, got ${tokens.map { it.count }}")
        }
        return decode(image, tokens, maskInputs, multimask)
    }

    private fun requireImage(what: String): ImageState =
        state ?: throw ImageNotSetException("An image must be set with setImage(...) $what.")

    /** Points and box corners must lie in [0, W] x [0, H] (pixel-corner coordinates, the border included). */
    private fun checkInside(prompt: Prompt, original: Size) {
        fun check(x: Double, y: Double, what: String) {
            if (!(x >= 0 && x <= original.w && y >= 0 && y <= original.h)) {
                throw PromptException("$what must lie inside the ${original.h}x${original.w} image, x in [0, ${original.w}] " +
                    "and y in [0, ${original.h}], got (x, y) = ($x, $y)")
            }
        }
        for (i in prompt.labels.indices) check(prompt.points[2 * i], prompt.points[2 * i + 1], "a point")
        val box = prompt.box ?: return
        check(box[0], box[1], "the box's top-left corner")
        check(box[2], box[3], "the box's bottom-right corner")
        if (box[0] > box[2] || box[1] > box[3]) throw PromptException("a box is (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
    }

    /** One decoder run on B prompts' tokens (each N tokens, input frame), then the post-processing per mask. */
    private fun decode(image: ImageState, tokens: List<DecoderTokens>, maskInputs: List<FloatArray>?, multimask: Boolean): List<Prediction> {
        val b = tokens.size
        val n = tokens[0].count
        val l = contract.lowResMaskSize
        val coords = FloatArray(b * n * 2)
        val labels = FloatArray(b * n)
        for (i in 0 until b) {
            tokens[i].coords.copyInto(coords, i * n * 2)
            tokens[i].labels.copyInto(labels, i * n)
        }
        val masksIn = FloatArray(b * l * l)
        maskInputs?.forEachIndexed { i, m -> m.copyInto(masksIn, i * l * l) }
        val feeds = LinkedHashMap<String, FloatTensor>()
        feeds[decEmbeddings] = image.embedding
        feeds[decCoords] = FloatTensor(intArrayOf(b, n, 2), coords)
        feeds[decLabels] = FloatTensor(intArrayOf(b, n), labels)
        feeds[decMask] = FloatTensor(intArrayOf(b, 1, l, l), masksIn)
        feeds[decHasMask] = FloatTensor.filled(intArrayOf(b), if (maskInputs == null) 0f else 1f)
        val cache = cacheIo
        val useCache = cache != null && maskInputs == null && imageCache != null
        if (cache != null) feeds.putAll(cacheFeeds(cache, if (useCache) imageCache else null))
        val out = decoder.run(feeds)
        if (cache != null && !useCache && maskInputs == null) imageCache = keptCache(cache, out)
        val lowRes = output(out, decLowRes, intArrayOf(b, contract.numMaskOutputs, l, l))
        val iou = output(out, decIou, intArrayOf(b, contract.numMaskOutputs))
        val slice = if (multimask) contract.multimaskSlice else contract.singleMaskSlice
        val c = slice.last - slice.first + 1
        return List(b) { i ->
            val first = i * contract.numMaskOutputs + slice.first
            val low = lowRes.data.copyOfRange(first * l * l, (first + c) * l * l)
            val scores = iou.data.copyOfRange(first, first + c)
            val logits = image.post.toOriginalFrame(low, c)
            Prediction(c, image.original, Transforms.threshold(logits, contract), scores, low, l)
        }
    }

    private fun output(out: Map<String, FloatTensor>, name: String, shape: IntArray): FloatTensor {
        val t = out[name] ?: throw EngineException("the decoder returned no $name")
        if (!t.shape.contentEquals(shape)) {
            throw EngineException("the decoder's $name is ${t.shape.joinToString("x")}, expected ${shape.joinToString("x")}")
        }
        return t
    }

    /** The image-cache inputs: the kept tensors with the flag 1, or (`kept` null) empty tensors with the flag 0. */
    private fun cacheFeeds(io: Contract.ImageCacheIo, kept: Map<String, FloatTensor>?): Map<String, FloatTensor> {
        val feeds = LinkedHashMap<String, FloatTensor>()
        io.inputs.forEachIndexed { i, name ->
            feeds[name] = kept?.get(name) ?: FloatTensor(intArrayOf(0) + io.rowShapes[i], FloatArray(0))
        }
        feeds[io.flag] = FloatTensor.filled(intArrayOf(1), if (kept != null) 1f else 0f)
        return feeds
    }

    /** The cache to feed back later, from a call that computed it without a mask input (every prompt of the
     *  batch computed the same cache: its first row is kept). */
    private fun keptCache(io: Contract.ImageCacheIo, out: Map<String, FloatTensor>): Map<String, FloatTensor> {
        val kept = LinkedHashMap<String, FloatTensor>()
        io.outputs.forEachIndexed { i, name ->
            val t = out[name] ?: throw EngineException("the decoder takes the image cache but returned no $name")
            if (t.shape.isEmpty() || t.shape[0] < 1) throw EngineException("the decoder returned an empty $name on a first click")
            val row = t.size / t.shape[0]
            kept[io.inputs[i]] = FloatTensor(intArrayOf(1) + t.shape.copyOfRange(1, t.shape.size), t.data.copyOfRange(0, row))
        }
        return kept
    }
}
