package org.pocketsam.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** An encoder that returns a tiny stand-in embedding (the session passes it on untouched). */
private class TinyEncoder : Engine {
    override val inputNames = Golden.contract.inputsOf("encoder")
    override val outputNames = Golden.contract.outputsOf("encoder")
    var calls = 0
    override fun run(feeds: Map<String, FloatTensor>): Map<String, FloatTensor> {
        calls++
        return mapOf(outputNames[0] to FloatTensor(intArrayOf(1, 1), floatArrayOf(calls.toFloat())))
    }
}

/**
 * A decoder that records its feeds and answers with masks that cover the whole image (logits 1) and scores
 * 0.1, 0.2, 0.3, 0.4; with `cached` it has the image-cache I/O and returns small cache tensors numbered by call.
 */
private class RecordingDecoder(cached: Boolean) : Engine {
    private val contract = Golden.contract
    private val graph = if (cached) "decoder_cached" else "decoder"
    override val inputNames = contract.inputsOf(graph)
    override val outputNames = contract.outputsOf(graph)
    val calls = ArrayList<Map<String, FloatTensor>>()

    override fun run(feeds: Map<String, FloatTensor>): Map<String, FloatTensor> {
        calls.add(feeds)
        assertEquals(inputNames.toSet(), feeds.keys)
        val b = feeds.getValue("point_labels").shape[0]
        val l = contract.lowResMaskSize
        val k = contract.numMaskOutputs
        val out = LinkedHashMap<String, FloatTensor>()
        out[outputNames[0]] = FloatTensor.filled(intArrayOf(b, k, l, l), 1f)
        out[outputNames[1]] = FloatTensor(intArrayOf(b, k), FloatArray(b * k) { 0.1f * (it % k + 1) })
        val cache = contract.imageCache!!
        if (graph == "decoder_cached") {
            val computes = feeds.getValue(cache.flag).data[0] == 0f
            for (name in cache.outputs) {
                out[name] = if (computes) FloatTensor(intArrayOf(b, 2), FloatArray(2 * b) { calls.size.toFloat() })
                else FloatTensor(intArrayOf(0, 2), FloatArray(0))
            }
        }
        return out
    }
}

/** The session's own behaviour: the optional image cache, fixed-shape decoders, and every bad input refused with
 *  a [PocketSamException] (the app shows its message). */
class SessionBehaviourTest {
    private val contract = Golden.contract
    private val image = RgbImage(20, 30, ByteArray(20 * 30 * 3) { (it % 251).toByte() })
    private val click = Prompt(doubleArrayOf(15.0, 10.0), intArrayOf(contract.labels.foreground))

    @Test
    fun imageCacheIsComputedOnTheFirstClickKeptAndFedBack() {
        val decoder = RecordingDecoder(cached = true)
        val session = SegmentSession(TinyEncoder(), decoder, contract)
        assertTrue(session.usesImageCache)
        val cache = contract.imageCache!!
        session.setImage(image)
        val first = session.predict(click)
        assertEquals(3, first.count)
        assertEquals(Size(20, 30), first.size)
        assertTrue("logits 1 everywhere: the whole image", first.masks.all { it })
        assertArrayEquals(floatArrayOf(0.2f, 0.3f, 0.4f), first.scores, 0f)
        assertEquals(2, first.bestIndex)
        session.predict(click, multimask = false)
        session.predict(click, maskInput = first.lowRes(first.bestIndex), multimask = false)
        session.predict(click)
        session.setImage(image)
        session.predict(click)

        val flags = decoder.calls.map { it.getValue(cache.flag).data[0] }
        // 1st click computes; 2nd reads; a mask input computes again, not kept; the 4th reads the 1st's; new image
        assertEquals(listOf(0f, 1f, 0f, 1f, 0f), flags)
        for (i in listOf(0, 2, 4)) for ((j, name) in cache.inputs.withIndex()) {
            assertArrayEquals(intArrayOf(0) + cache.rowShapes[j], decoder.calls[i].getValue(name).shape)
        }
        for (i in listOf(1, 3)) for (name in cache.inputs) {
            val fed = decoder.calls[i].getValue(name)
            assertArrayEquals(intArrayOf(1, 2), fed.shape)
            assertArrayEquals("the first click's cache", floatArrayOf(1f, 1f), fed.data, 0f)
        }
        assertEquals(1f, decoder.calls[2].getValue("has_mask_input").data[0], 0f)
        assertEquals(0f, decoder.calls[3].getValue("has_mask_input").data[0], 0f)
    }

    @Test
    fun plainDecoderGetsNoCacheInputs() {
        val decoder = RecordingDecoder(cached = false)
        val session = SegmentSession(TinyEncoder(), decoder, contract)
        assertFalse(session.usesImageCache)
        session.setImage(image)
        session.predict(click)
        session.predict(click)
        assertEquals(2, decoder.calls.size)
        assertTrue(decoder.calls.all { it.keys == contract.inputsOf("decoder").toSet() })
    }

    @Test
    fun fixedShapeDecoderGetsPaddedTokens() {
        val decoder = RecordingDecoder(cached = false)
        val session = SegmentSession(TinyEncoder(), decoder, contract, decoderPoints = 6)
        session.setImage(image)
        session.predict(Prompt(box = doubleArrayOf(2.0, 3.0, 20.0, 15.0)))
        val labels = decoder.calls[0].getValue("point_labels")
        assertArrayEquals(intArrayOf(1, 6), labels.shape)
        val lab = contract.labels
        assertArrayEquals(floatArrayOf(lab.boxTopLeft.toFloat(), lab.boxBottomRight.toFloat(), -1f, -1f, -1f, -1f), labels.data, 0f)
        assertArrayEquals(intArrayOf(1, 6, 2), decoder.calls[0].getValue("point_coords").shape)
        // 5 clicks + the pad point need 6 tokens: fine; 6 clicks need 7
        val five = Prompt(DoubleArray(10) { 5.0 }, IntArray(5) { lab.foreground })
        session.predict(five)
        val six = Prompt(DoubleArray(12) { 5.0 }, IntArray(6) { lab.foreground })
        expect<PromptException>("needs 7 decoder points but the decoder takes 6") { session.predict(six) }
    }

    @Test
    fun badInputsAreRefusedWithAMessage() {
        val session = SegmentSession(TinyEncoder(), RecordingDecoder(cached = false), contract)
        expect<ImageNotSetException>("must be set") { session.predict(click) }
        session.setImage(image)
        val fg = contract.labels.foreground
        expect<PromptException>("inside the 20x30 image") { session.predict(Prompt(doubleArrayOf(31.0, 5.0), intArrayOf(fg))) }
        expect<PromptException>("inside the 20x30 image") { session.predict(Prompt(doubleArrayOf(5.0, -1.0), intArrayOf(fg))) }
        expect<PromptException>("inside the 20x30 image") { session.predict(Prompt(doubleArrayOf(Double.NaN, 5.0), intArrayOf(fg))) }
        expect<PromptException>("x0 <= x1") { session.predict(Prompt(box = doubleArrayOf(20.0, 3.0, 2.0, 15.0))) }
        expect<PromptException>("give a prompt") { session.predict(Prompt()) }
        expect<PromptException>("256 x 256") { session.predict(click, maskInput = FloatArray(10)) }
        expect<PromptException>("finite") { session.predict(click, maskInput = FloatArray(256 * 256) { Float.NaN }) }
        expect<PromptException>("not a point label") { session.predict(Prompt(doubleArrayOf(5.0, 5.0), intArrayOf(7))) }
        // the border is inside (pixel-corner coordinates), as in the Python runtime
        session.predict(Prompt(doubleArrayOf(30.0, 20.0), intArrayOf(fg)))
        // a mask-only prompt: no tokens at all
        val r = session.predict(Prompt(), maskInput = FloatArray(256 * 256))
        assertEquals(3, r.count)
    }

    @Test
    fun failingEncoderLeavesNoStaleImage() {
        val failing = object : Engine {
            override val inputNames = contract.inputsOf("encoder")
            override val outputNames = contract.outputsOf("encoder")
            var fail = false
            override fun run(feeds: Map<String, FloatTensor>): Map<String, FloatTensor> {
                if (fail) throw EngineException("the GPU delegate refused the model")
                return mapOf(outputNames[0] to FloatTensor(intArrayOf(1), floatArrayOf(0f)))
            }
        }
        val session = SegmentSession(failing, RecordingDecoder(cached = false), contract)
        session.setImage(image)
        assertTrue(session.isImageSet)
        failing.fail = true
        expect<EngineException>("refused") { session.setImage(image) }
        assertFalse(session.isImageSet)
        assertNull(session.originalSize)
    }

    @Test
    fun enginesWithOtherNamesAreRefused() {
        val other = object : Engine {
            override val inputNames = listOf("args_0")
            override val outputNames = listOf("output_0")
            override fun run(feeds: Map<String, FloatTensor>): Map<String, FloatTensor> = emptyMap()
        }
        expect<BundleException>("not pocketsam's encoder I/O") { SegmentSession(other, RecordingDecoder(false), contract) }
        expect<BundleException>("not pocketsam's decoder I/O") { SegmentSession(TinyEncoder(), other, contract) }
    }

    private inline fun <reified E : PocketSamException> expect(fragment: String, block: () -> Unit) {
        try {
            block()
            fail("expected ${E::class.java.simpleName} saying \"$fragment\"")
        } catch (e: PocketSamException) {
            assertTrue("${e.javaClass.simpleName}: ${e.message}", e is E)
            assertTrue("\"${e.message}\" does not say \"$fragment\"", e.message!!.contains(fragment))
        }
    }
}
