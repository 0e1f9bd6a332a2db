package org.pocketsam.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Assume
import org.junit.Test
import java.io.File
import java.nio.file.Files

/**
 * The bundle reader refuses what `pocketsam.runtime.bundle.load_bundle` refuses, each with its own message; and it
 * reads a bundle `pocketsam export` wrote (the runner passes one as `-Dpocketsam.bundle=DIR`).
 */
class BundleManifestTest {
    private val contract = Golden.contract
    private val layout = contract.bundle

    /** A bundle folder made here: small stand-in part files, a manifest as `pocketsam export` writes one. */
    private fun bundle(format: String = "tflite", edit: (MutableMap<String, Any?>) -> Unit = {}): File {
        val root = Files.createTempDirectory("bundle").toFile()
        val ext = layout.formatExtensions.getValue(format)
        val parts = LinkedHashMap<String, Any?>()
        for (part in layout.parts) {
            val f = File(root, part + ext)
            f.writeBytes(ByteArray(1000 + part.length) { (it * 7).toByte() })
            val points: Any = if (format == "tflite") 6.0 else "num_points"
            parts[part] = linkedMapOf<String, Any?>("file" to f.name, "precision" to "fp32", "sha256" to BundleManifest.sha256Of(f),
                "size_bytes" to f.length().toDouble(), "weights_id" to "random:vit_t:seed0",
                "shapes" to mapOf("point_labels" to listOf(1.0, points)))
        }
        val m = linkedMapOf<String, Any?>("pocketsam_bundle" to 1.0, "spec_version" to contract.specVersion, "format" to format,
            "parts" to parts, "checkpoint" to linkedMapOf("kind" to "random", "seed" to 0.0, "description" to "random weights, seed 0"))
        edit(m)
        File(root, layout.manifest).writeText(Json.write(m))
        return root
    }

    @Suppress("UNCHECKED_CAST")
    private fun parts(m: MutableMap<String, Any?>) = m["parts"] as MutableMap<String, Any?>

    @Suppress("UNCHECKED_CAST")
    private fun part(m: MutableMap<String, Any?>, name: String) = parts(m)[name] as MutableMap<String, Any?>

    private fun refused(root: File, fragment: String) {
        try {
            BundleManifest.read(root, contract)
            fail("$root was accepted; expected a BundleException saying \"$fragment\"")
        } catch (e: BundleException) {
            assertTrue("\"${e.message}\" does not say \"$fragment\"", e.message!!.contains(fragment))
        }
    }

    @Test
    fun readsAGoodBundle() {
        val b = BundleManifest.read(bundle(), contract)
        assertEquals("tflite", b.format)
        assertEquals(contract.specVersion, b.specVersion)
        assertEquals("encoder.tflite", b.encoder.file.name)
        assertEquals("decoder.tflite", b.decoder.file.name)
        assertEquals(6, b.decoderPoints)
        assertTrue(b.isSynthetic)
        assertEquals("random weights, seed 0", b.checkpointDescription)
        assertNull(BundleManifest.read(bundle("onnx"), contract).decoderPoints)
    }

    @Test
    fun refusesBadBundles() {
        refused(File("/nonexistent/bundle"), "no such bundle folder")
        refused(bundle().also { File(it, layout.manifest).delete() }, "not a pocketsam bundle (no manifest.json)")
        refused(bundle().also { File(it, layout.manifest).writeText("{\"spec_version\": ") }, "not valid JSON")
        refused(bundle().also { File(it, layout.manifest).writeText("[1, 2]") }, "expected a JSON object")
        refused(bundle { it["spec_version"] = "1" }, "spec version 1 is not this app's ${contract.specVersion}; re-export")
        refused(bundle { it.remove("spec_version") }, "spec version null")
        refused(bundle { it["format"] = "savedmodel" }, "unknown format savedmodel")
        // missing parts: the decoder's entry, its file, or a field the app reads
        refused(bundle { parts(it).remove("decoder") }, "parts.decoder: expected an object")
        refused(bundle().also { File(it, "decoder.tflite").delete() }, "the decoder file decoder.tflite is missing")
        refused(bundle { part(it, "encoder").remove("sha256") }, "parts.encoder.sha256: missing")
        refused(bundle { part(it, "encoder")["size_bytes"] = -1.0 }, "parts.encoder.size_bytes: expected a byte count")
        refused(bundle { part(it, "decoder")["file"] = "../decoder.tflite" }, "parts.decoder.file: expected a file name")
        refused(bundle { it.remove("checkpoint") }, "checkpoint: expected an object")
        refused(bundle { part(it, "decoder")["weights_id"] = "random:vit_t:seed1" }, "come from different weights")
        // a part file that differs from the one the manifest describes
        refused(bundle().also { File(it, "encoder.tflite").appendBytes(byteArrayOf(1)) }, "does not match the manifest's")
    }

    @Test
    fun refusesAPartLinkedFromOutside() {
        val outside = Files.createTempFile("elsewhere", ".tflite").toFile()
        val root = bundle()
        val encoder = File(root, "encoder.tflite")
        outside.writeBytes(encoder.readBytes())
        encoder.delete()
        Files.createSymbolicLink(encoder.toPath(), outside.toPath())
        refused(root, "outside the bundle folder")
    }

    /** A bundle written by `pocketsam export` (the pytest wrapper exports a small one). */
    @Test
    fun readsABundlePocketsamWrote() {
        val path = System.getProperty("pocketsam.bundle")
        Assume.assumeTrue("no -Dpocketsam.bundle=DIR given", path != null)
        val b = BundleManifest.read(File(path!!), contract)
        assertEquals(contract.specVersion, b.specVersion)
        assertTrue(b.format in layout.formatExtensions)
        for (p in listOf(b.encoder, b.decoder)) {
            assertTrue(p.file.isFile)
            assertEquals(p.file.length(), p.sizeBytes)
            assertEquals(p.sha256, BundleManifest.sha256Of(p.file))
        }
        println("read ${b.format} bundle ${b.name}: encoder ${b.encoder.precision}, decoder ${b.decoder.precision}, " +
            "decoder points ${b.decoderPoints ?: "dynamic"}, ${b.checkpointDescription}")
    }
}
