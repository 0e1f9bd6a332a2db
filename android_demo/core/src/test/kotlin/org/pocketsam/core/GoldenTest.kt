package org.pocketsam.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assume
import org.junit.Test
import java.io.File

/**
 * The Kotlin pre/post-processing against the golden files made by UPSTREAM segment-anything / MobileSAM
 * (`tests/golden/`, the same files `tests/test_golden.py` holds the Python runtime to), stage by stage:
 * resize (bit-exact, by sha256), coordinates (float32 bit-equal), the decoder's prompt tokens, and masks from the
 * golden low-res logits (mask IoU bound from the one parity table, passed in by the runner).
 */
class GoldenTest {
    private val contract = Golden.contract
    private val images = Golden.images

    private fun sha256(bytes: ByteArray) = Golden.sha256(bytes)
    private fun size(v: Any?, what: String) = Golden.size(v, what)
    private fun png(image: Map<String, Any?>) = Golden.png(image)
    private fun doubles(v: Any?, what: String) = Golden.doubles(v, what)
    private fun floats32(v: Any?, what: String) = Golden.floats32(v, what)

    @Test
    fun contractHoldsTheSpecConstants() {
        assertEquals("2", contract.specVersion)
        assertEquals(1024, contract.imageSize)
        assertEquals(256, contract.lowResMaskSize)
        assertEquals(1 until 4, contract.multimaskSlice)
        assertEquals(listOf("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"),
            contract.inputs.getValue("decoder"))
        assertTrue(contract.inputs.getValue("decoder_cached").containsAll(contract.inputs.getValue("decoder")))
        assertEquals(Contract.BundleLayout("manifest.json", "probe.npz", listOf("encoder", "decoder"),
            mapOf("onnx" to ".onnx", "tflite" to ".tflite", "coreml" to ".mlpackage")), contract.bundle)
        // the image cache, read off the decoder and decoder_cached graphs
        val cache = contract.imageCache!!
        assertEquals(listOf("image_tokens", "t2i_keys", "t2i_values", "i2t_queries"), cache.outputs)
        assertEquals(cache.outputs.map { "cached_$it" }, cache.inputs)
        assertEquals("use_image_cache", cache.flag)
        assertArrayEquals(intArrayOf(4096, 256), cache.rowShapes[0])
        assertArrayEquals(intArrayOf(8, 16, 4096), cache.rowShapes[1])
    }

    @Test
    fun resizeIsBitExactWithUpstream() {
        for (image in images) {
            val name = image.at("name").str("name")
            val rgb = png(image)
            assertEquals("$name: the png is the image upstream saw", image.at("image_sha256").str("sha"), sha256(rgb.data))
            val original = size(image.at("original_size"), "original_size")
            assertEquals(name, size(image.at("input_size"), "input_size"), Transforms.preprocessShape(original, contract.imageSize))
            val resized = Transforms.resizeLongestSide(rgb, contract.imageSize)
            assertEquals("$name: resized image (PIL bilinear)", image.at("resized_sha256").str("sha"), sha256(resized.data))
            val encoderInput = Transforms.encoderInput(rgb, contract)
            val input = encoderInput.pixels
            val inputSize = encoderInput.inputSize
            assertEquals(size(image.at("input_size"), "input_size"), inputSize)
            val s = contract.imageSize
            for (c in 0 until 3) for (y in intArrayOf(0, inputSize.h - 1)) for (x in intArrayOf(0, inputSize.w - 1))
                assertEquals("$name: pixel", resized[y, x, c].toFloat(), input[(c * s + y) * s + x], 0f)
            if (inputSize.h < s || inputSize.w < s)  // bottom-right corner: padding with the pixel mean
                assertEquals("$name: padding", contract.padValueRaw[2].toFloat(), input[(2 * s + s - 1) * s + s - 1], 0f)
        }
    }

    /** PIL widens its bilinear filter when it downscales (it antialiases); the golden photos are all upscaled, so
     *  the runner passes a larger image and the sha256 of PIL's resize of it (`pocketsam.downscale=PNG:SHA256`). */
    @Test
    fun downscaleIsBitExactWithPil() {
        val spec = System.getProperty("pocketsam.downscale")
        Assume.assumeTrue("no -Dpocketsam.downscale=PNG:SHA256 given", spec != null)
        val (path, sha) = spec!!.split(":")
        val rgb = png(mapOf("png" to File(path).absolutePath))
        assertTrue("the case must downscale", maxOf(rgb.h, rgb.w) > contract.imageSize)
        assertEquals("downscaled ${rgb.h}x${rgb.w}", sha, sha256(Transforms.resizeLongestSide(rgb, contract.imageSize).data))
    }

    @Test
    fun coordinatesAreBitEqualToUpstream() {
        for (image in images) {
            val name = image.at("name").str("name")
            val original = size(image.at("original_size"), "original_size")
            for (key in listOf("coords", "boxes")) {
                val c = image.at(key).obj(key)
                val ours = Transforms.applyCoords(doubles(c.at("input"), key), original, contract.imageSize)
                assertArrayEquals("$name $key", floats32(c.at("transformed"), key), ours, 0f)
            }
            val batch = image.at("batch").obj("batch")
            val ours = Transforms.applyBoxes(doubles(batch.at("boxes"), "boxes"), original, contract.imageSize)
            assertArrayEquals("$name batch", floats32(batch.at("boxes_transformed"), "boxes_transformed"), ours, 0f)
        }
    }

    @Test
    fun promptTokensAreUpstreams() {
        val lab = contract.labels
        for (image in images) {
            val original = size(image.at("original_size"), "original_size")
            for (p in image.at("prompts").list("prompts").map { it.obj("prompt") }) {
                val what = "${image.at("name")}/${p.at("name")}"
                val want = Golden.upstreamTokens(p)
                val tokens = Golden.prompt(p).decoderTokens(original, contract)
                assertArrayEquals(what, want.coords, tokens.coords, 0f)
                assertArrayEquals(what, want.labels, tokens.labels, 0f)
                val fixed = Golden.prompt(p).decoderTokens(original, contract, decoderPoints = 6)
                assertEquals(what, 6, fixed.count)
                assertArrayEquals(what, want.labels, fixed.labels.copyOf(want.count), 0f)
                for (i in want.count until 6) assertEquals(what, lab.pad.toFloat(), fixed.labels[i], 0f)
            }
        }
    }

    @Test
    fun masksFromUpstreamLogitsMatchUpstreamMasks() {
        val bound = Golden.maskIouBound
        var worst = 1.0
        for (image in images) {
            val name = image.at("name").str("name")
            val npz = Golden.npz(image)
            val original = size(image.at("original_size"), "original_size")
            val inputSize = size(image.at("input_size"), "input_size")
            val cases = image.at("prompts").list("prompts").map { it.obj("prompt") } + image.at("batch").obj("batch")
            for (p in cases) {
                val key = p.at("name").str("name")
                val shape = p.at("masks_shape").list("masks_shape").map { it.num("masks_shape").toInt() }
                val count = shape.dropLast(2).fold(1) { a, b -> a * b }
                // the golden logits are float16 (to keep the files small): boundary pixels within its rounding
                // of 0 may flip, which the IoU bound allows
                val logits = npz.getValue("$key.low_res_logits").floats()
                val masks = Transforms.threshold(Transforms.postprocessMasks(logits, count, inputSize, original, contract), contract)
                val want = npz.getValue("$key.masks").unpackBits(masks.size)
                val v = Golden.iou(masks, want)
                worst = minOf(worst, v)
                assertTrue("$name/$key: mask IoU $v < $bound", v >= bound)
            }
        }
        println("masks from upstream's low-res logits: worst mask IoU $worst (bound >= $bound)")
    }

    @Test
    fun halfFloatsDecodeExactly() {
        assertEquals(1.0f, halfToFloat(0x3c00), 0f)
        assertEquals(-2.0f, halfToFloat(0xc000), 0f)
        assertEquals(65504f, halfToFloat(0x7bff), 0f)
        assertEquals(5.9604645e-8f, halfToFloat(0x0001), 0f)  // smallest subnormal
        assertEquals(6.097555e-5f, halfToFloat(0x03ff), 0f)  // largest subnormal
        assertTrue(halfToFloat(0x7c00).isInfinite())
    }
}
