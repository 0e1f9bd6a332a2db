package org.pocketsam.core

/**
 * One prompt in the original frame, turned into the decoder's `point_coords` / `point_labels` exactly as
 * upstream's PromptEncoder sees them (and `pocketsam.runtime.Predictor` builds them): the points, then the box
 * corners (labels boxTopLeft / boxBottomRight); when points come without a box, one (0, 0) point labelled pad.
 */
class Prompt(
    /** Interleaved x, y pixels in the original frame (may be empty). */
    val points: DoubleArray = DoubleArray(0),
    /** One label per point: the contract's foreground or background code. */
    val labels: IntArray = IntArray(0),
    /** XYXY pixels in the original frame, or null. */
    val box: DoubleArray? = null
) {
    init {
        require(points.size == labels.size * 2) { "Prompt: ${points.size / 2} points but ${labels.size} labels" }
        require(box == null || box.size == 4) { "Prompt: a box is 4 numbers, x0 y0 x1 y1" }
    }

    /** Whether the prompt has any token: points or a box (a mask-only prompt has none). */
    val hasTokens: Boolean get() = labels.isNotEmpty() || box != null

    /** The decoder's inputs for this prompt, batch 1: coords (N x 2, input frame, float32) and labels (N).
     *  `decoderPoints`: a fixed-shape decoder's point count (TFLite), padded with pad points; null: exact. */
    fun decoderTokens(original: Size, contract: Contract, decoderPoints: Int? = null): DecoderTokens {
        val lab = contract.labels
        for (l in labels) require(l == lab.foreground || l == lab.background) { "Prompt: label $l is not a point label" }
        val user = labels.size + if (box != null) 2 else 0
        // upstream appends one pad point when points come without a box
        var pad = if (labels.isNotEmpty() && box == null) 1 else 0
        if (decoderPoints != null) {
            require(user + pad <= decoderPoints) {
                "this prompt needs ${user + pad} decoder points but the decoder takes $decoderPoints"
            }
            pad = decoderPoints - user
        }
        val coords = FloatArray((user + pad) * 2) // pad points stay (0, 0)
        val codes = FloatArray(user + pad) { lab.pad.toFloat() }
        Transforms.applyCoords(points, original, contract.imageSize).copyInto(coords)
        for (i in labels.indices) codes[i] = labels[i].toFloat()
        if (box != null) {
            Transforms.applyBoxes(box, original, contract.imageSize).copyInto(coords, destinationOffset = points.size)
            codes[labels.size] = lab.boxTopLeft.toFloat()
            codes[labels.size + 1] = lab.boxBottomRight.toFloat()
        }
        return DecoderTokens(coords, codes)
    }
}

/** A prompt as the decoder takes it (batch 1): `coords` N x 2 (x, y) in the input frame and `labels` N, float32
 *  (label codes as floats: the graph handles them by arithmetic). */
class DecoderTokens(val coords: FloatArray, val labels: FloatArray) {
    val count: Int get() = labels.size
}
