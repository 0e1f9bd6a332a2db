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
    val outputs: Map<String, List<String>>,
    /** How a bundle folder is laid out. */
    val bundle: BundleLayout,
    /** The decoder's image-cache I/O, or null when the contract has no `decoder_cached` graph. */
    val imageCache: ImageCacheIo?
) {
    /** SAM's point label codes. */
    data class Labels(val pad: Int, val background: Int, val foreground: Int, val boxTopLeft: Int, val boxBottomRight: Int)

    /** A bundle folder: `manifest` (file name) names every part's file; `parts` are graph names ("encoder",
     *  "decoder"); `formatExtensions`: format -> the extension of its part files. */
    data class BundleLayout(
        val manifest: String,
        val probe: String,
        val parts: List<String>,
        val formatExtensions: Map<String, String>
    )

    /**
     * The decoder's optional image cache (`decoder_cached` in the contract; the ONNX export has it): the decoder
     * returns the image-only part of its work as extra `outputs` and takes it back as `inputs` (`inputs[i]` feeds
     * back `outputs[i]`), with `flag` 1 to read them, 0 to compute them (then the cached inputs are empty along
     * axis 0). Read off the two decoder graphs, so no name is retyped here.
     */
    class ImageCacheIo(
        val outputs: List<String>,
        val inputs: List<String>,
        val flag: String,
        /** The shape of each of `inputs` after its axis 0 (the cache batch). */
        val rowShapes: List<IntArray>
    )

    /** The ordered input (output) names of `graph`, failing with the graph's name when the contract lacks it. */
    fun inputsOf(graph: String): List<String> =
        inputs[graph] ?: throw IllegalArgumentException("contract.json has no graph \"$graph\"")

    fun outputsOf(graph: String): List<String> =
        outputs[graph] ?: throw IllegalArgumentException("contract.json has no graph \"$graph\"")

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
                outputs = names("outputs"),
                bundle = bundleLayout(doc.at("bundle").obj("bundle")),
                imageCache = imageCacheOf(graphs)
            )
        }

        private fun bundleLayout(b: Map<String, Any?>): BundleLayout = BundleLayout(
            manifest = b.at("manifest").str("bundle.manifest"),
            probe = b.at("probe").str("bundle.probe"),
            parts = b.at("parts").list("bundle.parts").map { it.str("bundle.parts") },
            formatExtensions = b.at("format_extensions").obj("bundle.format_extensions")
                .mapValues { (k, v) -> v.str("bundle.format_extensions.$k") }
        )

        private fun imageCacheOf(graphs: Map<String, Any?>): ImageCacheIo? {
            val cached = graphs["decoder_cached"]?.obj("decoder_cached") ?: return null
            val plain = graphs.at("decoder").obj("decoder")
            fun tensors(g: Map<String, Any?>, kind: String) = g.at(kind).list(kind).map { it.obj(kind) }
            fun name(t: Map<String, Any?>) = t.at("name").str("name")
            val plainIn = tensors(plain, "inputs").map { name(it) }
            val plainOut = tensors(plain, "outputs").map { name(it) }
            val extraIn = tensors(cached, "inputs").filter { name(it) !in plainIn }
            val extraOut = tensors(cached, "outputs").map { name(it) }.filter { it !in plainOut }
            // each cache output is fed back through the one extra input named after it (a prefix + its name)
            val fedBack = extraOut.map { out ->
                val matches = extraIn.filter { name(it) != out && name(it).endsWith(out) }
                require(matches.size == 1) { "contract.json: no single cached input for the decoder output $out" }
                matches[0]
            }
            val flags = extraIn.filter { it !in fedBack }.map { name(it) }
            require(flags.size == 1) { "contract.json: expected one image-cache flag input, got $flags" }
            val rowShapes = fedBack.map { t ->
                t.at("shape").list("shape").drop(1).map { it.num("${name(t)}.shape").toInt() }.toIntArray()
            }
            return ImageCacheIo(extraOut, fedBack.map { name(it) }, flags[0], rowShapes)
        }

        fun load(file: File): Contract = parse(file.readText())
    }
}
