package org.pocketsam.demo

import android.os.SystemClock
import org.pocketsam.core.BundleException
import org.pocketsam.core.BundleManifest
import org.pocketsam.core.Contender
import org.pocketsam.core.Contract
import org.pocketsam.core.Delegate
import org.pocketsam.core.Engine
import org.pocketsam.core.EngineException
import org.pocketsam.core.Opened
import org.pocketsam.core.SegmentSession
import org.pocketsam.core.openWithFallback

/** A bundle's two graphs opened by one engine with one delegate. Close it to free the models. */
class OpenedBundle(
    val manifest: BundleManifest,
    val engine: String,
    val engineVersion: String,
    val delegate: Delegate,
    val threads: Int?,
    val initSeconds: Double,
    val encoder: Engine,
    val decoder: Engine
) : AutoCloseable {
    fun session(contract: Contract) = SegmentSession(encoder, decoder, contract, manifest.decoderPoints)

    fun contender() = Contender(manifest, engine, engineVersion, delegate.label, threads, initSeconds, encoder, decoder)

    /** E.g. "litert 2.2.0, xnnpack ×4". */
    val description: String
        get() = "$engine $engineVersion, ${delegate.label}" + if (threads != null) " ×$threads" else ""

    override fun close() {
        encoder.close()
        decoder.close()
    }
}

/** Opens bundles with the engine of their format: LiteRT for TFLite, ONNX Runtime for ONNX. */
object Engines {
    /**
     * Open both graphs with exactly `delegate` (no fallback: the benchmark must not label XNNPACK's times as the
     * GPU's). Throws [EngineException] when the delegate refuses either graph, [BundleException] for a format this
     * app does not run.
     */
    fun open(manifest: BundleManifest, contract: Contract, delegate: Delegate, threads: Int): OpenedBundle {
        val start = SystemClock.elapsedRealtimeNanos()
        val cpuThreads = if (delegate == Delegate.XNNPACK) threads else null
        fun both(open: (String) -> Engine): Pair<Engine, Engine> {
            val encoder = open("encoder")
            val decoder = try {
                open("decoder")
            } catch (e: RuntimeException) {
                encoder.close()
                throw e
            }
            return Pair(encoder, decoder)
        }
        val (engine, version, graphs) = when (manifest.format) {
            "tflite" -> Triple("litert", BuildConfig.LITERT_VERSION, both { part ->
                val file = if (part == "encoder") manifest.encoder.file else manifest.decoder.file
                LiteRtEngine.open(file, contract.inputsOf(part), contract.outputsOf(part), delegate, threads)
            })
            "onnx" -> Triple("onnxruntime", BuildConfig.ONNXRUNTIME_VERSION, both { part ->
                OrtEngine.open(if (part == "encoder") manifest.encoder.file else manifest.decoder.file, delegate, threads)
            })
            else -> throw BundleException("${manifest.name} is a ${manifest.format} bundle; this app runs tflite and onnx " +
                "bundles (pocketsam export --format tflite)")
        }
        val seconds = (SystemClock.elapsedRealtimeNanos() - start) / 1e9
        return OpenedBundle(manifest, engine, version, delegate, cpuThreads, seconds, graphs.first, graphs.second)
    }

    /** Open with `requested`, falling back to XNNPACK when it refuses the model; the result says so. */
    fun openOrFallBack(manifest: BundleManifest, contract: Contract, requested: Delegate, threads: Int): Opened<OpenedBundle> =
        openWithFallback(requested) { d -> open(manifest, contract, d, threads) }
}
