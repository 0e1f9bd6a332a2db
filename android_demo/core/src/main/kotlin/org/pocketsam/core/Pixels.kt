package org.pocketsam.core

/** Conversions between the core's images and masks and the packed ARGB pixels of Android's `Bitmap` (one Int per
 *  pixel, 0xAARRGGBB, row-major), kept here so they are tested on the JVM. */
object Pixels {
    /** An RGB image from `width` x `height` ARGB pixels (`Bitmap.getPixels`); alpha is dropped, as PIL's
     *  `convert("RGB")` does. */
    fun rgbFromArgb(width: Int, height: Int, argb: IntArray): RgbImage {
        require(argb.size == width * height) { "expected ${width * height} pixels, got ${argb.size}" }
        val data = ByteArray(width * height * 3)
        for (i in argb.indices) {
            val p = argb[i]
            data[3 * i] = (p shr 16).toByte()
            data[3 * i + 1] = (p shr 8).toByte()
            data[3 * i + 2] = p.toByte()
        }
        return RgbImage(height, width, data)
    }

    /** A mask overlay: `color` (ARGB, its alpha the overlay's opacity) where the mask is, transparent elsewhere. */
    fun overlay(mask: BooleanArray, color: Int): IntArray = IntArray(mask.size) { if (mask[it]) color else 0 }

    /** A mask as opaque white on opaque black, the PNG the app saves (as `pocketsam predict --out` writes). */
    fun maskImage(mask: BooleanArray): IntArray =
        IntArray(mask.size) { if (mask[it]) 0xFFFFFFFF.toInt() else 0xFF000000.toInt() }

    /**
     * The power-of-two subsampling (`BitmapFactory.Options.inSampleSize`) that brings a `width` x `height` photo to
     * at most `maxPixels` pixels: a 50-megapixel photo decoded whole would not fit in an app's heap, and the
     * encoder sees at most `imageSize`² pixels anyway. 1 when it already fits.
     */
    fun sampleSize(width: Int, height: Int, maxPixels: Long): Int {
        require(width > 0 && height > 0 && maxPixels > 0) { "sizes must be positive" }
        var s = 1
        while (width.toLong() / s * (height.toLong() / s) > maxPixels) s *= 2
        return s
    }
}
