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

    /** The decoder's inputs for this prompt, batch 1: coords (N x 2, input frame, float32) and labels (N).
     *  `decoderPoints`: a fixed-shape decoder's point count (TFLite), padded with pad points; null: exact. */
    fun decoderTokens(original: Size, contract: Contract, decoderPoints: Int? = null): Pair<FloatArray, FloatArray> {
        val lab = contract.labels
        for (l in labels) require(l == lab.foreground || l == lab.background) { "Prompt: label $l is not a point label" }
        val xy = ArrayList<Float>()
        val codes = ArrayList<Float>()
        Transforms.applyCoords(points, original, contract.imageSize).forEach { xy.add(it) }
        labels.forEach { codes.add(it.toFloat()) }
        if (box != null) {
            Transforms.applyBoxes(box, original, contract.imageSize).forEach { xy.add(it) }
            codes.add(lab.boxTopLeft.toFloat())
            codes.add(lab.boxBottomRight.toFloat())
        }
        var pad = if (labels.isNotEmpty() && box == null) 1 else 0
        if (decoderPoints != null) {
            val need = codes.size + pad
            require(need <= decoderPoints) { "this prompt needs $need decoder points but the decoder takes $decoderPoints" }
            pad = decoderPoints - codes.size
        }
        repeat(pad) { xy.add(0f); xy.add(0f); codes.add(lab.pad.toFloat()) }
        return xy.toFloatArray() to codes.toFloatArray()
    }
}
