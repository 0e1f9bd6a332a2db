package org.pocketsam.demo

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtException
import ai.onnxruntime.OrtSession
import org.pocketsam.core.Delegate
import org.pocketsam.core.Engine
import org.pocketsam.core.EngineException
import org.pocketsam.core.FloatTensor
import java.io.File
import java.nio.FloatBuffer

/**
 * One graph of an ONNX bundle in ONNX Runtime Android. ONNX bundles have dynamic point counts, and their decoder
 * carries the image cache (the session feeds it back; empty tensors along axis 0 when there is none yet).
 *
 * Delegates map to execution providers: XNNPACK to the XNNPACK EP (its own thread pool; ONNX Runtime's intra-op
 * pool is then kept at 1 thread, as ONNX Runtime advises), NNAPI to the NNAPI EP. ONNX Runtime Android has no GPU
 * execution provider: GPU is refused, and the app falls back with a message.
 */
class OrtEngine private constructor(private val session: OrtSession) : Engine {
    private val env = OrtEnvironment.getEnvironment()
    override val inputNames: List<String> = session.inputNames.toList()
    override val outputNames: List<String> = session.outputNames.toList()

    override fun run(feeds: Map<String, FloatTensor>): Map<String, FloatTensor> {
        val tensors = LinkedHashMap<String, OnnxTensor>()
        try {
            for (name in inputNames) {
                val t = feeds[name] ?: throw EngineException("ONNX Runtime: no feed for input $name")
                tensors[name] = OnnxTensor.createTensor(env, FloatBuffer.wrap(t.data), t.shape.map { it.toLong() }.toLongArray())
            }
            val result = session.run(tensors)
            try {
                return outputNames.associateWith { name ->
                    val value = result.get(name).orElseThrow { EngineException("ONNX Runtime: no output $name") } as OnnxTensor
                    val shape = value.info.shape.map { it.toInt() }.toIntArray()
                    val buffer = value.floatBuffer
                    val data = FloatArray(buffer.remaining())
                    buffer.get(data)
                    FloatTensor(shape, data)
                }
            } finally {
                result.close()
            }
        } catch (e: OrtException) {
            throw EngineException("ONNX Runtime could not run the graph (${e.message})", e)
        } finally {
            tensors.values.forEach { it.close() }
        }
    }

    override fun close() = session.close()

    companion object {
        /** Open `file` with `delegate`; [EngineException] when the execution provider refuses the model. */
        fun open(file: File, delegate: Delegate, threads: Int): OrtEngine {
            val env = OrtEnvironment.getEnvironment()
            val options = OrtSession.SessionOptions()
            try {
                when (delegate) {
                    Delegate.XNNPACK -> {
                        options.addXnnpack(mapOf("intra_op_num_threads" to threads.toString()))
                        options.setIntraOpNumThreads(1)
                    }
                    Delegate.NNAPI -> options.addNnapi()
                    Delegate.GPU -> throw EngineException("ONNX Runtime Android has no GPU execution provider")
                }
                return OrtEngine(env.createSession(file.absolutePath, options))
            } catch (e: OrtException) {
                throw EngineException("${file.name}: ${e.message}", e)
            } finally {
                options.close()
            }
        }
    }
}
