package org.pocketsam.core

import java.io.File

/**
 * pocketsam's pre/post-processing contract as `pocketsam.runtime.spec.write_contract` writes it
 * (`tests/golden/contract.json`, copied into the app's assets): the constants every implementation must share and
 * the graphs' input/output names. Nothing here is retyped from Python: a value missing from the file is an error.
 */
class Contract(
    val specVersion: String,
    /** Longest side after resizing; the encoder input is imageSize x imageSize. */
    val imageSize: Int,
    /** RGB, 0..255 scale: the encoder normalizes inside; the host pads raw pixels with [padValueRaw]. */
    val pixelMean: DoubleArray,
    val pixelStd: DoubleArray,
    val padValueRaw: DoubleArray,
    val lowResMaskSize: Int,
    val numMaskOutputs: Int,
    /** [start, end) of the multimask outputs (SamPredictor's `multimask_output=True`). */
    val multimaskSlice: IntRange,
    val singleMaskSlice: IntRange,
    val maskThreshold: Double,
    val labels: Labels,
    /** Graph name ("encoder", "decoder", "decoder_cached") -> ordered input names / output names. */
    val inputs: Map<String, List<String>>,
    val outputs: Map<String, List<String>>
) {
    /** SAM's point label codes. */
    data class Labels(val pad: Int, val background: Int, val foreground: Int, val boxTopLeft: Int, val boxBottomRight: Int)

    companion object {
        fun parse(text: String): Contract {
            val doc = Json.parse(text).obj("contract.json")
            val c = doc.at("constants").obj("constants")
            fun d(key: String) = c.at(key).num(key)
            fun i(key: String) = d(key).toInt()
            fun doubles(key: String) = c.at(key).list(key).map { it.num(key) }.toDoubleArray()
            fun slice(key: String): IntRange {
                val v = c.at(key).list(key).map { it.num(key).toInt() }
                return v[0] until v[1]
            }
            val labels = c.at("labels").obj("labels")
            fun label(key: String) = labels.at(key).num(key).toInt()
            val graphs = doc.at("graphs").obj("graphs")
            fun names(kind: String) = graphs.mapValues { (g, spec) ->
                spec.obj(g).at(kind).list("$g.$kind").map { it.obj("$g.$kind").at("name").str("name") }
            }
            return Contract(
                specVersion = c.at("spec_version").str("spec_version"),
                imageSize = i("image_size"),
                pixelMean = doubles("pixel_mean"),
                pixelStd = doubles("pixel_std"),
                padValueRaw = doubles("pad_value_raw"),
                lowResMaskSize = i("low_res_mask_size"),
                numMaskOutputs = i("num_mask_outputs"),
                multimaskSlice = slice("multimask_slice"),
                singleMaskSlice = slice("single_mask_slice"),
                maskThreshold = d("mask_threshold"),
                labels = Labels(label("pad"), label("background"), label("foreground"), label("box_top_left"),
                    label("box_bottom_right")),
                inputs = names("inputs"),
                outputs = names("outputs")
            )
        }

        fun load(file: File): Contract = parse(file.readText())
    }
}
