package org.pocketsam.core

import java.util.Date
import java.text.SimpleDateFormat
import java.util.Locale
import java.util.TimeZone

/**
 * Timing statistics of one case in milliseconds, computed as `pocketsam.benchmarks.harness` computes them:
 * numpy's median, its linearly interpolated 90th percentile, min, max and mean.
 */
class TimingStats(val runs: Int, val medianMs: Double, val p90Ms: Double, val minMs: Double, val maxMs: Double, val meanMs: Double) {
    /** The row's `stats` object (`pocketsam.benchmarks.schema`). */
    fun toJson(): Map<String, Any?> = linkedMapOf(
        "runs" to runs, "median_ms" to medianMs, "p90_ms" to p90Ms, "min_ms" to minMs, "max_ms" to maxMs,
        "mean_ms" to meanMs)

    companion object {
        fun of(ms: DoubleArray): TimingStats {
            require(ms.isNotEmpty()) { "no timings" }
            val sorted = ms.sortedArray()
            return TimingStats(ms.size, median(sorted), percentile(sorted, 90.0), sorted[0], sorted[sorted.size - 1],
                ms.sum() / ms.size)
        }

        /** numpy.median of sorted `a`: the middle value, or the mean of the two middle values. */
        fun median(sorted: DoubleArray): Double {
            val n = sorted.size
            return if (n % 2 == 1) sorted[n / 2] else (sorted[n / 2 - 1] + sorted[n / 2]) / 2
        }

        /** numpy.percentile(a, q) of sorted `a` (method "linear": between the two nearest ranks). */
        fun percentile(sorted: DoubleArray, q: Double): Double {
            val rank = q / 100.0 * (sorted.size - 1)
            val lo = Math.floor(rank).toInt()
            val hi = minOf(lo + 1, sorted.size - 1)
            val t = rank - lo
            // numpy's lerp: from the lower end below t = 0.5, from the upper end from there on
            return if (t < 0.5) sorted[lo] + (sorted[hi] - sorted[lo]) * t else sorted[hi] - (sorted[hi] - sorted[lo]) * (1 - t)
        }
    }
}

/** Where rows were measured: the app fills it from `android.os.Build`; the names are the bench schema's. */
class DeviceInfo(
    /** The phone's maker and model, e.g. "Google Pixel 8". */
    val device: String,
    /** The SoC, e.g. "Tensor G3" (`Build.SOC_MODEL`), or null. */
    val cpu: String? = null,
    val cores: Int? = null,
    /** The ABIs the device runs, e.g. ["arm64-v8a"]. */
    val isa: List<String>? = null,
    /** E.g. "Android 14 (API 34)". */
    val os: String? = null,
    /** The primary ABI. */
    val machine: String? = null
)

/** One contender of a benchmark: a bundle opened by one engine with one delegate. */
class Contender(
    val manifest: BundleManifest,
    /** "litert" or "onnxruntime" (the engine names of pocketsam's local rows). */
    val engine: String,
    val engineVersion: String?,
    /** "xnnpack", "gpu", "nnapi", ... */
    val delegate: String?,
    /** CPU threads, or null for the engine's default. */
    val threads: Int?,
    /** Seconds it took to open both graphs. */
    val initSeconds: Double?,
    val encoder: Engine,
    val decoder: Engine
)

/** One result row in pocketsam's bench row schema (`pocketsam.benchmarks.schema`), target "android". */
class BenchRow(val contender: Contender, val part: String, val stats: TimingStats, val device: DeviceInfo, val time: Date,
               val note: String?) {
    /** The row as `pocketsam bench-merge` reads it (every field of the schema, null where not measured). */
    fun toJson(): Map<String, Any?> {
        val m = contender.manifest
        val precision = when (part) {
            "encoder" -> m.encoder.precision
            "decoder" -> m.decoder.precision
            else -> "${m.encoder.precision}/${m.decoder.precision}"
        }
        val modelBytes = when (part) {
            "encoder" -> m.encoder.sizeBytes
            "decoder" -> m.decoder.sizeBytes
            else -> null
        }
        return linkedMapOf(
            "schema" to SCHEMA_VERSION,
            "target" to "android",
            "name" to m.name,
            "engine" to contender.engine,
            "engine_version" to contender.engineVersion,
            "delegate" to contender.delegate,
            "part" to part,
            "precision" to precision,
            "threads" to contender.threads,
            "format" to m.format,
            "stats" to stats.toJson(),
            "init_s" to contender.initSeconds,
            "memory" to null,
            "model_bytes" to modelBytes,
            "is_reference" to false,
            "reference" to null,
            "speedup" to null,
            "parity" to null,
            "device" to device.device,
            "cpu" to device.cpu,
            "cores" to device.cores,
            "isa" to device.isa,
            "os" to device.os,
            "machine" to device.machine,
            "python" to null,
            "engines" to if (contender.engineVersion != null) linkedMapOf(contender.engine to contender.engineVersion) else null,
            "git" to null,
            "time" to iso8601(time),
            "load" to null,
            "note" to note
        )
    }

    companion object {
        /** The schema version of `pocketsam.benchmarks.schema` these rows follow (a pytest feeds them to
         *  `pocketsam bench-merge`, which validates every row, so a change there fails here). */
        const val SCHEMA_VERSION = 1

        /** The parts a benchmark times, in the schema's order: one encoder run; one decoder run on a click's
         *  feeds; a click (decoder + post-processing); an image's first click (encoder + decoder + both). */
        val PARTS = listOf("encoder", "decoder", "prompt", "e2e")

        /** A results file: `{"schema": 1, "rows": [...]}`. */
        fun document(rows: List<BenchRow>): String =
            Json.write(linkedMapOf("schema" to SCHEMA_VERSION, "rows" to rows.map { it.toJson() })) + "\n"

        private fun iso8601(time: Date): String {
            val f = SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss'+00:00'", Locale.ROOT)
            f.timeZone = TimeZone.getTimeZone("UTC")
            return f.format(time)
        }
    }
}

/**
 * Interleaved timing of contenders, as `pocketsam bench` does on a computer: after `warmup` rounds, `runs` rounds
 * each time every part of every contender once (A B C A B C …), so every contender sees the same device state
 * (thermal throttling included); each timed call follows a `settleMs` pause that lets the previous engine's
 * threads go to sleep. Medians are what to read.
 *
 * The cases, per contender (as `pocketsam.benchmarks.local`): "encoder" runs the encoder on the image's input;
 * "decoder" runs the decoder on the feeds of a real click (an image's second click: a decoder with the image cache
 * reads it); "prompt" is such a click through [SegmentSession.predict] (decoder + post-processing); "e2e" sets the
 * image on a session of its own and clicks once.
 *
 * @param clock nanoseconds (tests pass a fake one).
 */
class Benchmark(
    val contract: Contract,
    val image: RgbImage,
    val runs: Int,
    val warmup: Int = 1,
    val settleMs: Long = 200,
    val parts: List<String> = BenchRow.PARTS,
    private val clock: () -> Long = { System.nanoTime() }
) {
    init {
        require(runs >= 1 && warmup >= 0) { "runs must be >= 1 and warmup >= 0" }
        require(parts.isNotEmpty() && parts.all { it in BenchRow.PARTS }) { "parts must be among ${BenchRow.PARTS}" }
    }

    /** The click every prompt case makes: the image's centre, a foreground point. */
    fun click(): Prompt =
        Prompt(doubleArrayOf(image.w * 0.5, image.h * 0.5), intArrayOf(contract.labels.foreground))

    private fun cases(c: Contender): Map<String, () -> Unit> {
        val recorder = RecordingEngine(c.decoder)
        val points = c.manifest.decoderPoints
        val session = SegmentSession(c.encoder, recorder, contract, points)
        session.setImage(image)
        val click = click()
        session.predict(click)
        session.predict(click)  // the second click: with the image cache, the one that reads it
        val feeds = recorder.lastFeeds!!
        val encoderInput = Transforms.encoderInput(image, contract).pixels
        val s = contract.imageSize
        val encoderFeeds = mapOf(contract.inputsOf("encoder")[0] to FloatTensor(intArrayOf(1, 3, s, s), encoderInput))
        val fresh = SegmentSession(c.encoder, c.decoder, contract, points)  // e2e must not drop `session`'s cache
        val all: Map<String, () -> Unit> = mapOf(
            "encoder" to { c.encoder.run(encoderFeeds); Unit },
            "decoder" to { c.decoder.run(feeds); Unit },
            "prompt" to { session.predict(click); Unit },
            "e2e" to { fresh.setImage(image); fresh.predict(click); Unit }
        )
        return parts.associateWith { all.getValue(it) }
    }

    /**
     * Time every part of every contender; one row per (contender, part). `progress(done, total)` is called after
     * each timed call (warm-up included).
     */
    fun run(contenders: List<Contender>, device: DeviceInfo, progress: (Int, Int) -> Unit = { _, _ -> }): List<BenchRow> {
        val cases = contenders.map { cases(it) }
        val times = contenders.map { parts.associateWith { DoubleArray(runs) } }
        val total = (warmup + runs) * contenders.size * parts.size
        var done = 0
        for (round in 0 until warmup + runs) {
            for ((i, c) in cases.withIndex()) {
                for (part in parts) {
                    if (settleMs > 0) Thread.sleep(settleMs)
                    val t0 = clock()
                    c.getValue(part)()
                    val t1 = clock()
                    if (round >= warmup) times[i].getValue(part)[round - warmup] = (t1 - t0) / 1e6
                    progress(++done, total)
                }
            }
        }
        val now = Date()
        val note = "pocketsam android demo, in-app benchmark: $warmup warm-up round(s), $runs interleaved runs; " +
            "parity not measured on the device"
        return contenders.withIndex().flatMap { (i, c) ->
            parts.map { part -> BenchRow(c, part, TimingStats.of(times[i].getValue(part)), device, now, note) }
        }
    }
}
