package org.pocketsam.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File
import java.nio.file.Files

/** A clock the fake engines move: each call "takes" the milliseconds its engine is given. */
private class FakeClock {
    var nanos = 0L
    fun spend(ms: Double) { nanos += (ms * 1e6).toLong() }
}

/** An engine of the contract's I/O that spends `ms(call)` on the fake clock and answers with zeros. */
private class TimedEngine(private val graph: String, private val clock: FakeClock, private val ms: (Int) -> Double) : Engine {
    private val contract = Golden.contract
    override val inputNames = contract.inputsOf(graph)
    override val outputNames = contract.outputsOf(graph)
    var calls = 0

    override fun run(feeds: Map<String, FloatTensor>): Map<String, FloatTensor> {
        clock.spend(ms(calls++))
        val l = contract.lowResMaskSize
        val k = contract.numMaskOutputs
        return if (graph == "encoder") mapOf(outputNames[0] to FloatTensor(intArrayOf(1), floatArrayOf(0f)))
        else mapOf(outputNames[0] to FloatTensor.filled(intArrayOf(1, k, l, l)),
            outputNames[1] to FloatTensor.filled(intArrayOf(1, k)))
    }
}

/**
 * The in-app benchmark: statistics computed as pocketsam's harness computes them (numpy's median and percentile),
 * interleaved runs over contenders, and rows in pocketsam's bench row schema. With `-Dpocketsam.benchOut=FILE`
 * the rows are written there; the pytest wrapper feeds them to `pocketsam bench-merge`.
 */
class BenchTest {
    private val contract = Golden.contract

    @Test
    fun statisticsAreNumpys() {
        // numpy 2: median, percentile(90) and mean of these arrays
        val a = TimingStats.of(doubleArrayOf(12.5, 3.0, 7.25, 100.0, 4.5, 9.0, 3.5))
        assertEquals(7, a.runs)
        assertEquals(7.25, a.medianMs, 0.0)
        assertEquals(47.50000000000003, a.p90Ms, 0.0)
        assertEquals(3.0, a.minMs, 0.0)
        assertEquals(100.0, a.maxMs, 0.0)
        assertEquals(19.964285714285715, a.meanMs, 1e-12)
        val b = TimingStats.of(doubleArrayOf(2.0, 1.0, 4.0, 3.0))
        assertEquals(2.5, b.medianMs, 0.0)
        assertEquals(3.7, b.p90Ms, 0.0)
        assertEquals(0.6, TimingStats.percentile(doubleArrayOf(0.1, 0.2, 0.7), 90.0), 0.0)
    }

    /** A bundle folder with stand-in parts, read by the real reader. */
    private fun manifest(name: String, format: String, precision: String): BundleManifest {
        val root = File(Files.createTempDirectory("bench").toFile(), name)
        root.mkdirs()
        val ext = contract.bundle.formatExtensions.getValue(format)
        val parts = LinkedHashMap<String, Any?>()
        for (part in contract.bundle.parts) {
            val f = File(root, part + ext)
            f.writeBytes(ByteArray(if (part == "encoder") 4000 else 1500))
            parts[part] = linkedMapOf("file" to f.name, "precision" to precision, "sha256" to BundleManifest.sha256Of(f),
                "size_bytes" to f.length().toDouble(), "weights_id" to "random:vit_t:seed0",
                "shapes" to mapOf("point_labels" to listOf(1.0, if (format == "tflite") 6.0 else "num_points")))
        }
        File(root, contract.bundle.manifest).writeText(Json.write(linkedMapOf("spec_version" to contract.specVersion,
            "format" to format, "parts" to parts,
            "checkpoint" to linkedMapOf("kind" to "random", "seed" to 0.0, "description" to "random weights, seed 0"))))
        return BundleManifest.read(root, contract)
    }

    @Test
    fun interleavedRunsGiveSchemaRows() {
        val clock = FakeClock()
        val image = RgbImage(30, 40, ByteArray(30 * 40 * 3) { (it % 200).toByte() })
        val tflite = manifest("mobilesam-tflite", "tflite", "fp32")
        // encoder calls take 100, 110, 120, 100, ... ms; decoder calls 5, 6, 5, 6, ... (set-up calls included)
        val xnnpack = Contender(tflite, "litert", "2.2.0", "xnnpack", 4, 0.5,
            TimedEngine("encoder", clock) { 100.0 + 10 * (it % 3) }, TimedEngine("decoder", clock) { 5.0 + it % 2 })
        val gpu = Contender(tflite, "litert", "2.2.0", "gpu", null, 2.25,
            TimedEngine("encoder", clock) { 40.0 }, TimedEngine("decoder", clock) { 3.0 })
        val bench = Benchmark(contract, image, runs = 5, warmup = 1, settleMs = 0, clock = { clock.nanos })
        var calls = 0
        val rows = bench.run(listOf(xnnpack, gpu), DeviceInfo("Google Pixel 8", "Tensor G3", 9, listOf("arm64-v8a"),
            "Android 14 (API 34)", "arm64-v8a")) { done, total -> calls++; assertTrue(done <= total) }
        assertEquals((1 + 5) * 2 * 4, calls)
        assertEquals(2 * 4, rows.size)
        val byKey = rows.associateBy { "${it.contender.delegate}/${it.part}" }
        for (r in rows) assertEquals(5, r.stats.runs)
        assertEquals(40.0, byKey.getValue("gpu/encoder").stats.medianMs, 1e-9)
        assertEquals(3.0, byKey.getValue("gpu/decoder").stats.medianMs, 1e-9)
        assertEquals(3.0, byKey.getValue("gpu/prompt").stats.medianMs, 1e-9)
        assertEquals(43.0, byKey.getValue("gpu/e2e").stats.medianMs, 1e-9)
        // the xnnpack encoder's calls take 100, 110 or 120 ms: every timing is one of them
        val enc = byKey.getValue("xnnpack/encoder").stats
        assertTrue(enc.minMs >= 100.0 && enc.maxMs <= 120.0)
        val json = rows.map { it.toJson() }
        val first = json[0]
        assertEquals(1, first["schema"])
        assertEquals("android", first["target"])
        assertEquals("mobilesam-tflite", first["name"])
        assertEquals("fp32", first["precision"])
        assertEquals(4000L, first["model_bytes"])
        assertEquals("fp32/fp32", json.first { it["part"] == "e2e" }["precision"])
        val doc = BenchRow.document(rows)
        val parsed = Json.parse(doc).obj("doc")
        assertEquals(rows.size, parsed.at("rows").list("rows").size)
        System.getProperty("pocketsam.benchOut")?.let {
            File(it).writeText(doc)
            println("wrote ${rows.size} bench rows to $it")
        }
    }
}
