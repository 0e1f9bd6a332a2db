package org.pocketsam.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

class PixelsTest {
    @Test
    fun argbPixelsBecomeRgbBytesAndMasksBecomePixels() {
        val rgb = Pixels.rgbFromArgb(2, 1, intArrayOf(0x80102030.toInt(), 0xFFFFFFFF.toInt()))
        assertEquals(Size(1, 2), Size(rgb.h, rgb.w))
        assertEquals(listOf(0x10, 0x20, 0x30, 255, 255, 255), (0 until 2).flatMap { x -> (0 until 3).map { rgb[0, x, it] } })
        val mask = booleanArrayOf(true, false)
        assertArrayEquals(intArrayOf(0x660000FF, 0), Pixels.overlay(mask, 0x660000FF))
        assertArrayEquals(intArrayOf(0xFFFFFFFF.toInt(), 0xFF000000.toInt()), Pixels.maskImage(mask))
        assertEquals(1, Pixels.sampleSize(4000, 3000, 12_000_000))
        assertEquals(2, Pixels.sampleSize(8000, 6000, 12_000_000))
        assertEquals(4, Pixels.sampleSize(12000, 9000, 12_000_000))
    }
}
