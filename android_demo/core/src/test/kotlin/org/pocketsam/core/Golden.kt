package org.pocketsam.core

import java.io.File
import java.security.MessageDigest
import javax.imageio.ImageIO

/**
 * The golden files made by UPSTREAM segment-anything / MobileSAM (`tests/golden/`, found through
 * `-Dpocketsam.golden=DIR`) and small readers for them, shared by the JVM tests.
 */
object Golden {
    val dir = File(System.getProperty("pocketsam.golden") ?: error("run with -Dpocketsam.golden=DIR (tests/golden)"))
    val contract: Contract = Contract.load(File(dir, "contract.json"))
    private val doc = Json.parse(File(dir, "golden.json").readText()).obj("golden.json")
    val images: List<Map<String, Any?>> = doc.at("images").list("images").map { it.obj("image") }

    /** The mask IoU bound the runner passes in: the parity table's e2e fp32 row. */
    val maskIouBound: Double
        get() = System.getProperty("pocketsam.maskIou")?.toDouble()
            ?: error("run with -Dpocketsam.maskIou=B: the e2e fp32 mask IoU bound of pocketsam.runtime.parity")

    fun sha256(bytes: ByteArray): String =
        MessageDigest.getInstance("SHA-256").digest(bytes).joinToString("") { String.format("%02x", it) }

    fun size(v: Any?, what: String): Size {
        val hw = v.list(what).map { it.num(what).toInt() }
        return Size(hw[0], hw[1])
    }

    fun doubles(v: Any?, what: String): DoubleArray = flatten(v).map { it.num(what) }.toDoubleArray()

    private fun flatten(v: Any?): List<Any?> = if (v is List<*>) v.flatMap { flatten(it) } else listOf(v)

    fun floats32(v: Any?, what: String): FloatArray = doubles(v, what).map { it.toFloat() }.toFloatArray()

    /** The photo of a golden image entry (or any PNG given as {"png": path}), as the RGB bytes upstream saw. */
    fun png(image: Map<String, Any?>): RgbImage {
        val file = File(image.at("png").str("png")).let { if (it.isAbsolute) it else File(dir, it.path) }
        val img = ImageIO.read(file)
        val data = ByteArray(img.height * img.width * 3)
        for (y in 0 until img.height) for (x in 0 until img.width) {
            val rgb = img.getRGB(x, y)
            val i = (y * img.width + x) * 3
            data[i] = (rgb shr 16).toByte(); data[i + 1] = (rgb shr 8).toByte(); data[i + 2] = rgb.toByte()
        }
        return RgbImage(img.height, img.width, data)
    }

    fun npz(image: Map<String, Any?>): Map<String, NpyArray> = readNpz(File(dir, image.at("npz").str("npz")))

    /** The user prompt of a golden prompt entry (original frame). */
    fun prompt(p: Map<String, Any?>): Prompt {
        val points = if (p.containsKey("point_coords")) doubles(p["point_coords"], "points") else DoubleArray(0)
        val labels = if (p.containsKey("point_labels")) doubles(p["point_labels"], "labels").map { it.toInt() }.toIntArray() else IntArray(0)
        val box = if (p.containsKey("box")) doubles(p["box"], "box") else null
        return Prompt(points, labels, box)
    }

    /** The decoder tokens upstream's PromptEncoder saw for a golden prompt entry: its transformed points, its
     *  transformed box corners (labels 2, 3), and the pad point when points come without a box. */
    fun upstreamTokens(p: Map<String, Any?>): DecoderTokens {
        val lab = contract.labels
        var xy = FloatArray(0)
        var codes = FloatArray(0)
        if (p.containsKey("point_coords")) {
            xy += floats32(p["point_coords_transformed"], "point_coords_transformed")
            codes += doubles(p["point_labels"], "point_labels").map { it.toFloat() }.toFloatArray()
        }
        if (p.containsKey("box")) {
            xy += floats32(p["box_transformed"], "box_transformed")
            codes += floatArrayOf(lab.boxTopLeft.toFloat(), lab.boxBottomRight.toFloat())
        } else if (p.containsKey("point_coords")) {
            xy += floatArrayOf(0f, 0f)
            codes += lab.pad.toFloat()
        }
        return DecoderTokens(xy, codes)
    }

    /** Pooled IoU of two mask stacks (as `pocketsam.runtime.verify.pooled_iou`). */
    fun iou(a: BooleanArray, b: BooleanArray): Double {
        require(a.size == b.size) { "masks of ${a.size} and ${b.size} pixels" }
        var inter = 0L
        var union = 0L
        for (i in a.indices) {
            if (a[i] && b[i]) inter++
            if (a[i] || b[i]) union++
        }
        return if (union == 0L) 1.0 else inter.toDouble() / union
    }
}
