package org.pocketsam.core

/** An image size as (h, w): rows, columns. */
data class Size(val h: Int, val w: Int)

/** The encoder's input: `pixels` float32 1x3xSxS (NCHW, S = `Contract.imageSize`) and the size of the resized
 *  image inside it, top-left (`input_size`, the part of the input frame that is not padding). A plain class, not a
 *  data class: its equality would compare the array by reference. */
class EncoderInput(val pixels: FloatArray, val inputSize: Size)

/** An RGB image, HxWx3 unsigned bytes in row-major order (the layout of a numpy uint8 HxWx3 array). */
class RgbImage(val h: Int, val w: Int, val data: ByteArray) {
    init {
        require(h >= 1 && w >= 1 && data.size == h * w * 3) { "RgbImage: $h x $w x 3 needs ${h * w * 3} bytes, got ${data.size}" }
    }

    operator fun get(y: Int, x: Int, c: Int): Int = data[(y * w + x) * 3 + c].toInt() and 0xff
}

/**
 * segment-anything's pre/post-processing, as `pocketsam.runtime.transforms` implements it in numpy; the golden
 * files pin both to upstream (`tests/golden/`).
 *
 * Frames: the *original* frame is the user's image, (x, y) pixels from its top-left corner; the *input* frame is
 * that image resized so its longest side is `Contract.imageSize`, padded at the bottom and right to a square.
 */
object Transforms {
    /** (newh, neww) of an (h, w) image resized so its longest side is `longSide` (upstream's rounding). */
    fun preprocessShape(original: Size, longSide: Int): Size {
        val scale = longSide * 1.0 / maxOf(original.h, original.w)
        return Size((original.h * scale + 0.5).toInt(), (original.w * scale + 0.5).toInt())
    }

    /**
     * Map (x, y) points, interleaved x0 y0 x1 y1 ..., from the original frame to the input frame, as float32:
     * scaled in float64 then rounded once, as upstream (numpy float64, then torch's float32 cast).
     */
    fun applyCoords(xy: DoubleArray, original: Size, longSide: Int): FloatArray {
        val new = preprocessShape(original, longSide)
        val sx = new.w.toDouble() / original.w
        val sy = new.h.toDouble() / original.h
        return FloatArray(xy.size) { i -> (xy[i] * if (i % 2 == 0) sx else sy).toFloat() }
    }

    /** Map XYXY boxes (4 values each) from the original frame to the input frame, as float32. */
    fun applyBoxes(boxes: DoubleArray, original: Size, longSide: Int): FloatArray = applyCoords(boxes, original, longSide)

    // --- resize: PIL's bilinear (what upstream's ResizeLongestSide runs), bit for bit ---------------------------

    /** PIL's fixed-point precision for 8-bit images: 32 bits - 8 for the value - 2 for overflow. */
    private const val PRECISION_BITS = 32 - 8 - 2

    /** One axis of PIL's resampling: for output i, taps [bounds[2i], bounds[2i] + bounds[2i+1]) with weights kk. */
    private class Coefficients(val ksize: Int, val bounds: IntArray, val kk: IntArray)

    private fun bilinear(x: Double): Double {
        val a = if (x < 0.0) -x else x
        return if (a < 1.0) 1.0 - a else 0.0
    }

    /** PIL's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter (support 1, widened by the
     *  scale when downscaling: PIL antialiases), over the box [0, inSize). */
    private fun coefficients(inSize: Int, outSize: Int): Coefficients {
        val scale = inSize.toDouble() / outSize
        val filterScale = if (scale < 1.0) 1.0 else scale
        val support = 1.0 * filterScale
        val ksize = Math.ceil(support).toInt() * 2 + 1
        val pre = DoubleArray(outSize * ksize)
        val bounds = IntArray(outSize * 2)
        val ss = 1.0 / filterScale
        for (xx in 0 until outSize) {
            val center = (xx + 0.5) * scale
            var xmin = (center - support + 0.5).toInt() // C's (int): truncation
            if (xmin < 0) xmin = 0
            var xmax = (center + support + 0.5).toInt()
            if (xmax > inSize) xmax = inSize
            xmax -= xmin
            var ww = 0.0
            for (x in 0 until xmax) {
                val w = bilinear((x + xmin - center + 0.5) * ss)
                pre[xx * ksize + x] = w
                ww += w
            }
            if (ww != 0.0) for (x in 0 until xmax) pre[xx * ksize + x] /= ww
            bounds[xx * 2] = xmin
            bounds[xx * 2 + 1] = xmax
        }
        val one = (1 shl PRECISION_BITS).toDouble()
        val kk = IntArray(pre.size) { i -> if (pre[i] < 0) (-0.5 + pre[i] * one).toInt() else (0.5 + pre[i] * one).toInt() }
        return Coefficients(ksize, bounds, kk)
    }

    /** PIL's clip8: the fixed-point sum back to 0..255. */
    private fun clip8(ss: Int): Int {
        val v = ss shr PRECISION_BITS
        return if (v < 0) 0 else if (v > 255) 255 else v
    }

    /** `image` resized to (h, w) exactly as PIL's `Image.resize((w, h), BILINEAR)` on an RGB image: a horizontal
     *  pass over the rows the vertical pass reads, rounded to 8 bits, then the vertical pass. */
    fun resizeBilinear(image: RgbImage, size: Size): RgbImage {
        val needHorizontal = size.w != image.w
        val needVertical = size.h != image.h
        val vert = coefficients(image.h, size.h)
        var src = image
        var vBounds = vert.bounds
        if (needHorizontal) {
            val first = vert.bounds[0]
            val last = vert.bounds[size.h * 2 - 2] + vert.bounds[size.h * 2 - 1]
            vBounds = vert.bounds.copyOf()
            for (i in 0 until size.h) vBounds[i * 2] -= first
            val hor = coefficients(image.w, size.w)
            val rows = last - first
            val out = ByteArray(rows * size.w * 3)
            for (yy in 0 until rows) {
                for (xx in 0 until size.w) {
                    val xmin = hor.bounds[xx * 2]
                    val xmax = hor.bounds[xx * 2 + 1]
                    for (c in 0 until 3) {
                        var ss = 1 shl (PRECISION_BITS - 1)
                        for (x in 0 until xmax) ss += image[yy + first, x + xmin, c] * hor.kk[xx * hor.ksize + x]
                        out[(yy * size.w + xx) * 3 + c] = clip8(ss).toByte()
                    }
                }
            }
            src = RgbImage(rows, size.w, out)
        }
        if (!needVertical) return if (src === image) RgbImage(image.h, image.w, image.data.copyOf()) else src
        val out = ByteArray(size.h * src.w * 3)
        for (yy in 0 until size.h) {
            val ymin = vBounds[yy * 2]
            val ymax = vBounds[yy * 2 + 1]
            for (xx in 0 until src.w) {
                for (c in 0 until 3) {
                    var ss = 1 shl (PRECISION_BITS - 1)
                    for (y in 0 until ymax) ss += src[y + ymin, xx, c] * vert.kk[yy * vert.ksize + y]
                    out[(yy * src.w + xx) * 3 + c] = clip8(ss).toByte()
                }
            }
        }
        return RgbImage(size.h, src.w, out)
    }

    /** ResizeLongestSide: `image` resized so its longest side is `longSide`. */
    fun resizeLongestSide(image: RgbImage, longSide: Int): RgbImage =
        resizeBilinear(image, preprocessShape(Size(image.h, image.w), longSide))

    /**
     * The encoder's input for `image`: float32 1x3xSxS (S = imageSize), raw 0..255 values of the resized image,
     * padded bottom/right with the contract's `padValueRaw` (the graph normalizes inside, so padding with the
     * mean is SAM's zero padding), and the resized size inside it (`input_size`).
     */
    fun encoderInput(image: RgbImage, contract: Contract): EncoderInput {
        val s = contract.imageSize
        val resized = resizeLongestSide(image, s)
        val out = FloatArray(3 * s * s)
        for (c in 0 until 3) {
            val pad = contract.padValueRaw[c].toFloat()
            val plane = c * s * s
            for (i in 0 until s * s) out[plane + i] = pad
            for (y in 0 until resized.h) for (x in 0 until resized.w) out[plane + y * s + x] = resized[y, x, c].toFloat()
        }
        return EncoderInput(out, Size(resized.h, resized.w))
    }

    // --- masks: the decoder's low-res logits back to the original frame ---------------------------------------

    /**
     * One axis of torch's `F.interpolate(mode="bilinear", align_corners=False)` from `inSize` to `outSize` as
     * (first tap, weight of it, weight of the next) per output. The source index and weights are float32 with the
     * index's product rounded once, as torch's CPU kernel computes them (and the numpy runtime mirrors).
     */
    private class Taps(val i0: IntArray, val i1: IntArray, val w0: DoubleArray, val w1: DoubleArray)

    private fun taps(inSize: Int, outSize: Int): Taps {
        val scale = inSize.toFloat() / outSize.toFloat()
        val i0 = IntArray(outSize)
        val i1 = IntArray(outSize)
        val w0 = DoubleArray(outSize)
        val w1 = DoubleArray(outSize)
        for (o in 0 until outSize) {
            var src = (scale.toDouble() * (o + 0.5) - 0.5).toFloat()
            if (src < 0f) src = 0f
            val a = src.toInt()
            i0[o] = a
            i1[o] = minOf(a + 1, inSize - 1)
            val l1 = src - a.toFloat()
            w1[o] = l1.toDouble()
            w0[o] = (1f - l1).toDouble()
        }
        return Taps(i0, i1, w0, w1)
    }

    /** One output position of an axis of `postprocess_masks`: it reads low-res entries `index[j]` with weight
     *  `weight[j]` (at most 4, in increasing index order). */
    internal class SparseRow(val index: IntArray, val weight: DoubleArray)

    /** One axis of `postprocess_masks` (low-res -> upsampled to `padded`, cropped to `valid`, resized to
     *  `outSize`), one sparse row per output position. */
    internal fun axis(lowRes: Int, padded: Int, valid: Int, outSize: Int): Array<SparseRow> {
        val up = taps(lowRes, padded)
        val down = taps(valid, outSize)
        return Array(outSize) { o ->
            // The two upsampled taps each output reads, each made of two low-res taps: up to 4 entries, merged
            // per index in this order (the order the weights are summed in) and then sorted by index.
            val index = IntArray(4)
            val weight = DoubleArray(4)
            var n = 0
            fun add(i: Int, w: Double) {
                for (j in 0 until n) if (index[j] == i) { weight[j] += w; return }
                index[n] = i; weight[n] = w; n++
            }
            add(up.i0[down.i0[o]], down.w0[o] * up.w0[down.i0[o]])
            add(up.i1[down.i0[o]], down.w0[o] * up.w1[down.i0[o]])
            add(up.i0[down.i1[o]], down.w1[o] * up.w0[down.i1[o]])
            add(up.i1[down.i1[o]], down.w1[o] * up.w1[down.i1[o]])
            sortedRow(index, weight, n)
        }
    }

    private fun sortedRow(index: IntArray, weight: DoubleArray, n: Int): SparseRow {
        val order = (0 until n).sortedBy { index[it] }
        return SparseRow(IntArray(n) { index[order[it]] }, DoubleArray(n) { weight[order[it]] })
    }

    /**
     * segment-anything's `postprocess_masks`: low-res logits C x L x L (input frame, L = lowResMaskSize) ->
     * C x H x W logits in the original frame: bilinear to imageSize², crop to `inputSize`, bilinear to `original`.
     * One-off form of [MaskPostprocessor], which an app keeps per image (its interpolation taps depend only on
     * the sizes).
     */
    fun postprocessMasks(lowRes: FloatArray, count: Int, inputSize: Size, original: Size, contract: Contract): FloatArray =
        MaskPostprocessor(inputSize, original, contract).toOriginalFrame(lowRes, count)

    /** Binary masks: logits > the contract's mask threshold. */
    fun threshold(logits: FloatArray, contract: Contract): BooleanArray =
        BooleanArray(logits.size) { logits[it] > contract.maskThreshold }
}

/**
 * `Transforms.postprocessMasks` for one image size: the sparse interpolation taps of both axes are computed once
 * (at set-image time), each click then costs at most 4 multiply-adds per output value per axis.
 */
class MaskPostprocessor(val inputSize: Size, val original: Size, private val contract: Contract) {
    private val l = contract.lowResMaskSize
    private val rows = Transforms.axis(l, contract.imageSize, inputSize.h, original.h)
    private val cols = Transforms.axis(l, contract.imageSize, inputSize.w, original.w)

    /** C x L x L low-res logits -> C x H x W logits in the original frame (rows first, then columns). */
    fun toOriginalFrame(lowRes: FloatArray, count: Int): FloatArray {
        require(lowRes.size == count * l * l) { "postprocessMasks: expected $count x $l x $l logits, got ${lowRes.size}" }
        val (h, w) = original
        val out = FloatArray(count * h * w)
        val tmp = DoubleArray(h * l)
        for (m in 0 until count) {
            val base = m * l * l
            for (y in 0 until h) {
                val idx = rows[y].index
                val wt = rows[y].weight
                for (x in 0 until l) {
                    var s = 0.0
                    for (j in idx.indices) s += wt[j] * lowRes[base + idx[j] * l + x]
                    tmp[y * l + x] = s
                }
            }
            for (y in 0 until h) for (x in 0 until w) {
                val idx = cols[x].index
                val wt = cols[x].weight
                var s = 0.0
                for (j in idx.indices) s += wt[j] * tmp[y * l + idx[j]]
                out[(m * h + y) * w + x] = s.toFloat()
            }
        }
        return out
    }
}
