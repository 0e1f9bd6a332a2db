package org.pocketsam.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertSame
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** Replays the golden embedding of one image, checking the encoder input it is given. */
private class ReplayEncoder(private val embedding: FloatTensor, private val inputSize: Size) : Engine {
    private val contract = Golden.contract
    override val inputNames = contract.inputsOf("encoder")
    override val outputNames = contract.outputsOf("encoder")
    var calls = 0

    override fun run(feeds: Map<String, FloatTensor>): Map<String, FloatTensor> {
        calls++
        val x = feeds.getValue(inputNames[0])
        val s = contract.imageSize
        assertArrayEquals(intArrayOf(1, 3, s, s), x.shape)
        if (inputSize.w < s) {  // right of the resized image: the pixel mean, per channel
            for (c in 0 until 3) assertEquals(contract.padValueRaw[c].toFloat(), x.data[(c * s + 0) * s + s - 1], 0f)
        }
        return mapOf(outputNames[0] to embedding)
    }
}

/** One expected decoder call: its tokens (what upstream's PromptEncoder saw), mask input, and the golden outputs
 *  (count masks of the multimask or single-mask slice; the other slots get values that would fail the test). */
private class Expected(val tokens: List<DecoderTokens>, val maskInput: FloatArray?, val lowRes: FloatArray,
                       val scores: FloatArray, val multimask: Boolean)

/** Replays the golden low-res logits and scores of the expected call, after checking its feeds bit for bit. */
private class ReplayDecoder(private val embedding: FloatTensor) : Engine {
    private val contract = Golden.contract
    override val inputNames = contract.inputsOf("decoder")
    override val outputNames = contract.outputsOf("decoder")
    var expected: Expected? = null

    override fun run(feeds: Map<String, FloatTensor>): Map<String, FloatTensor> {
        val e = expected ?: error("an unexpected decoder call")
        expected = null
        assertEquals(inputNames.toSet(), feeds.keys)
        val (emb, coords, labels, mask, hasMask) = inputNames.map { feeds.getValue(it) }
        assertSame("the embedding the encoder returned", embedding, emb)
        val b = e.tokens.size
        val n = e.tokens[0].count
        assertArrayEquals(intArrayOf(b, n, 2), coords.shape)
        assertArrayEquals(intArrayOf(b, n), labels.shape)
        for (i in 0 until b) {
            assertArrayEquals("coords", e.tokens[i].coords, coords.data.copyOfRange(i * n * 2, (i + 1) * n * 2), 0f)
            assertArrayEquals("labels", e.tokens[i].labels, labels.data.copyOfRange(i * n, (i + 1) * n), 0f)
        }
        val l = contract.lowResMaskSize
        assertArrayEquals(intArrayOf(b, 1, l, l), mask.shape)
        assertArrayEquals(FloatArray(b) { if (e.maskInput != null) 1f else 0f }, hasMask.data, 0f)
        assertArrayEquals(e.maskInput ?: FloatArray(b * l * l), mask.data, 0f)
        // all 4 outputs: the golden ones in their slice, elsewhere logits of +-100 and scores of +-99
        val k = contract.numMaskOutputs
        val slice = if (e.multimask) contract.multimaskSlice else contract.singleMaskSlice
        val c = slice.last - slice.first + 1
        val lowRes = FloatArray(b * k * l * l) { if ((it / (l * l)) % 2 == 0) 100f else -100f }
        val iou = FloatArray(b * k) { 99f }
        for (i in 0 until b) {
            e.lowRes.copyInto(lowRes, (i * k + slice.first) * l * l, i * c * l * l, (i + 1) * c * l * l)
            e.scores.copyInto(iou, i * k + slice.first, i * c, (i + 1) * c)
        }
        return mapOf(outputNames[0] to FloatTensor(intArrayOf(b, k, l, l), lowRes),
            outputNames[1] to FloatTensor(intArrayOf(b, k), iou))
    }
}

/**
 * A [SegmentSession] driven by engines that replay the golden embedding and low-res logits (made by UPSTREAM
 * segment-anything / MobileSAM) gives the golden masks: every prompt kind of every golden photo, through the
 * session's own prompt tokens, mask-input feeds, output slicing and post-processing. The decoder checks its feeds
 * against upstream's tokens bit for bit.
 */
class SegmentSessionTest {
    private val contract = Golden.contract

    @Test
    fun replayedGoldenEnginesGiveTheGoldenMasks() {
        val bound = Golden.maskIouBound
        var worst = 1.0
        var cases = 0
        for (image in Golden.images) {
            val name = image.at("name").str("name")
            val npz = Golden.npz(image)
            val embedding = FloatTensor(npz.getValue("embedding").shape, npz.getValue("embedding").floats())
            val inputSize = Golden.size(image.at("input_size"), "input_size")
            val encoder = ReplayEncoder(embedding, inputSize)
            val decoder = ReplayDecoder(embedding)
            val session = SegmentSession(encoder, decoder, contract)
            assertFalse(session.usesImageCache)
            session.setImage(Golden.png(image))
            assertEquals(1, encoder.calls)
            assertEquals(Golden.size(image.at("original_size"), "original_size"), session.originalSize)
            assertEquals(inputSize, session.inputSize)

            for (p in image.at("prompts").list("prompts").map { it.obj("prompt") }) {
                val key = p.at("name").str("name")
                val multimask = p.at("multimask_output") == true
                val maskInput = npz["$key.mask_input"]?.floats()
                decoder.expected = Expected(listOf(Golden.upstreamTokens(p)), maskInput,
                    npz.getValue("$key.low_res_logits").floats(), Golden.floats32(p["scores"], "scores"), multimask)
                val result = session.predict(Golden.prompt(p), maskInput, multimask)
                worst = minOf(worst, check("$name/$key", result, listOf(p), npz, key, bound))
                cases++
            }

            // the batch: 3 boxes in one decoder run (SamPredictor.predict_torch)
            val batch = image.at("batch").obj("batch")
            val boxes = Golden.doubles(batch.at("boxes"), "boxes")
            val prompts = List(boxes.size / 4) { Prompt(box = boxes.copyOfRange(it * 4, it * 4 + 4)) }
            val transformed = Golden.floats32(batch.at("boxes_transformed"), "boxes_transformed")
            val lab = contract.labels
            val tokens = prompts.indices.map {
                DecoderTokens(transformed.copyOfRange(it * 4, it * 4 + 4), floatArrayOf(lab.boxTopLeft.toFloat(), lab.boxBottomRight.toFloat()))
            }
            decoder.expected = Expected(tokens, null, npz.getValue("batch_boxes.low_res_logits").floats(),
                Golden.floats32(batch.at("scores"), "scores"), batch.at("multimask_output") == true)
            val results = session.predictBatch(prompts, multimask = true)
            assertEquals(prompts.size, results.size)
            val want = npz.getValue("batch_boxes.masks").unpackBits(results.fold(0) { n, r -> n + r.masks.size })
            val ours = results.fold(BooleanArray(0)) { acc, r -> acc + r.masks }
            val v = Golden.iou(ours, want)
            assertTrue("$name/batch_boxes: mask IoU $v < $bound", v >= bound)
            worst = minOf(worst, v)
            cases++
        }
        assertEquals(4 * 8, cases)
        println("SegmentSession over replayed golden engines: worst mask IoU $worst over $cases cases (bound >= $bound)")
    }

    private fun check(what: String, r: Prediction, ps: List<Map<String, Any?>>, npz: Map<String, NpyArray>, key: String,
                      bound: Double): Double {
        val p = ps[0]
        val shape = p.at("masks_shape").list("masks_shape").map { it.num("masks_shape").toInt() }
        assertEquals(what, shape[0], r.count)
        assertEquals(what, Size(shape[1], shape[2]), r.size)
        assertArrayEquals(what, Golden.floats32(p["scores"], "scores"), r.scores, 0f)
        assertEquals(what, (p.at("best_index") as Double).toInt(), r.bestIndex)
        assertArrayEquals(what, npz.getValue("$key.low_res_logits").floats(), r.lowResLogits, 0f)
        val want = npz.getValue("$key.masks").unpackBits(r.masks.size)
        val v = Golden.iou(r.masks, want)
        assertTrue("$what: mask IoU $v < $bound", v >= bound)
        return v
    }
}
