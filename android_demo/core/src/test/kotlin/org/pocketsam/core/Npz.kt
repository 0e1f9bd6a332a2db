package org.pocketsam.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.zip.ZipFile

/** One array of a .npz: its numpy dtype string ("<f2", "<f4", "|u1"), shape and raw little-endian bytes. */
class NpyArray(val dtype: String, val shape: IntArray, val bytes: ByteArray) {
    val size: Int get() = shape.fold(1) { a, b -> a * b }

    /** The values as float32 (float16 and float32 arrays). */
    fun floats(): FloatArray {
        val buf = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)
        return when (dtype) {
            "<f4" -> FloatArray(size) { buf.getFloat(it * 4) }
            "<f2" -> FloatArray(size) { halfToFloat(buf.getShort(it * 2).toInt() and 0xffff) }
            else -> throw IllegalArgumentException("not a float array: $dtype")
        }
    }

    /** `np.unpackbits(a, count=n)` of a uint8 array: bit 7 of byte 0 first. */
    fun unpackBits(n: Int): BooleanArray {
        require(dtype == "|u1") { "not a uint8 array: $dtype" }
        return BooleanArray(n) { ((bytes[it / 8].toInt() shr (7 - it % 8)) and 1) == 1 }
    }
}

/** IEEE half -> float (normals, subnormals, zeros, inf/nan). */
fun halfToFloat(h: Int): Float {
    val sign = (h shr 15) and 1
    val exp = (h shr 10) and 0x1f
    val mant = h and 0x3ff
    val bits = when {
        exp == 0 && mant == 0 -> sign shl 31
        exp == 0 -> { // subnormal: normalize
            var e = 0
            var m = mant
            while (m and 0x400 == 0) { m = m shl 1; e-- }
            (sign shl 31) or ((e + 127 - 14) shl 23) or ((m and 0x3ff) shl 13)
        }
        exp == 0x1f -> (sign shl 31) or (0xff shl 23) or (mant shl 13)
        else -> (sign shl 31) or ((exp - 15 + 127) shl 23) or (mant shl 13)
    }
    return java.lang.Float.intBitsToFloat(bits)
}

/** The arrays of a .npz file (numpy's zip of .npy files, format versions 1-3), read eagerly. */
fun readNpz(file: File): Map<String, NpyArray> {
    val out = LinkedHashMap<String, NpyArray>()
    ZipFile(file).use { zip ->
        for (entry in zip.entries()) {
            val raw = zip.getInputStream(entry).use { it.readBytes() }
            out[entry.name.removeSuffix(".npy")] = parseNpy(raw, entry.name)
        }
    }
    return out
}

private fun parseNpy(raw: ByteArray, name: String): NpyArray {
    require(raw.size > 10 && raw[0] == 0x93.toByte() && String(raw, 1, 5, Charsets.US_ASCII) == "NUMPY") { "$name: not .npy" }
    val major = raw[6].toInt()
    val buf = ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN)
    val (headerLen, start) = if (major == 1) (buf.getShort(8).toInt() and 0xffff) to 10 else buf.getInt(8) to 12
    val header = String(raw, start, headerLen, Charsets.ISO_8859_1)
    val descr = Regex("'descr':\\s*'([^']+)'").find(header)?.groupValues?.get(1) ?: error("$name: no descr")
    require(!header.contains("'fortran_order': True")) { "$name: Fortran order is not supported" }
    val dims = Regex("'shape':\\s*\\(([^)]*)\\)").find(header)?.groupValues?.get(1) ?: error("$name: no shape")
    val shape = dims.split(",").map { it.trim() }.filter { it.isNotEmpty() }.map { it.toInt() }.toIntArray()
    return NpyArray(descr, shape, raw.copyOfRange(start + headerLen, raw.size))
}
