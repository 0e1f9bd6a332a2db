package org.pocketsam.demo

import org.pocketsam.core.Delegate
import org.pocketsam.core.Engine
import org.pocketsam.core.EngineException
import org.pocketsam.core.FloatTensor
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate
import org.tensorflow.lite.nnapi.NnApiDelegate
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * One graph of a TFLite bundle in LiteRT's Interpreter, through the file's signature (pocketsam's exports carry
 * one per batch size; the batch-1 signature is used).
 *
 * Names: litert-torch names a signature's inputs after the keyword arguments it traced, so pocketsam's files carry
 * the contract's names; files with positional names (`args_0`…, `output_0`…) are mapped by position, as
 * `pocketsam.runtime.backends.litert` does. LiteRT graphs have fixed shapes: a feed of another shape is an
 * [EngineException] (the session pads prompts to the decoder's point count from the manifest).
 *
 * Not thread-safe, and the GPU delegate must run on the thread that created it: the app opens and runs every
 * engine on one worker thread.
 */
class LiteRtEngine private constructor(
    private val interpreter: Interpreter,
    private val closeables: List<AutoCloseable>,
    private val signature: String,
    /** contract name -> the file's signature name */
    private val inputMap: Map<String, String>,
    private val outputMap: Map<String, String>
) : Engine {
    override val inputNames: List<String> = inputMap.keys.toList()
    override val outputNames: List<String> = outputMap.keys.toList()

    private val inputShapes: Map<String, IntArray> =
        inputMap.mapValues { (_, n) -> interpreter.getInputTensorFromSignature(n, signature).shape() }
    private val outputShapes: Map<String, IntArray> =
        outputMap.mapValues { (_, n) -> interpreter.getOutputTensorFromSignature(n, signature).shape() }

    // Direct buffers, allocated once: the encoder's input alone is 12 MB.
    private val inputBuffers = HashMap<String, ByteBuffer>()
    private val outputBuffers: Map<String, ByteBuffer> =
        outputShapes.mapValues { (_, s) -> direct(s.fold(1) { a, b -> a * b }) }

    override fun run(feeds: Map<String, FloatTensor>): Map<String, FloatTensor> {
        val inputs = HashMap<String, Any>()
        for ((name, fileName) in inputMap) {
            val t = feeds[name] ?: throw EngineException("LiteRT: no feed for input $name")
            val want = inputShapes.getValue(name)
            if (!t.shape.contentEquals(want)) {
                throw EngineException("LiteRT: input $name is ${t.shape.joinToString("x")}, this graph takes " +
                    "${want.joinToString("x")} (LiteRT graphs have fixed shapes)")
            }
            val buf = inputBuffers.getOrPut(name) { direct(t.size) }
            buf.rewind()
            buf.asFloatBuffer().put(t.data)
            inputs[fileName] = buf
        }
        val outputs = HashMap<String, Any>()
        for ((name, fileName) in outputMap) outputs[fileName] = outputBuffers.getValue(name).also { it.rewind() }
        try {
            interpreter.runSignature(inputs, outputs, signature)
        } catch (e: RuntimeException) {
            throw EngineException("LiteRT could not run the graph (${e.message})", e)
        }
        return outputMap.keys.associateWith { name ->
            val shape = outputShapes.getValue(name)
            val buf = outputBuffers.getValue(name)
            buf.rewind()
            val data = FloatArray(shape.fold(1) { a, b -> a * b })
            buf.asFloatBuffer().get(data)
            FloatTensor(shape, data)
        }
    }

    override fun close() {
        interpreter.close()
        closeables.forEach { it.close() }
    }

    companion object {
        private fun direct(floats: Int): ByteBuffer = ByteBuffer.allocateDirect(floats * 4).order(ByteOrder.nativeOrder())

        /**
         * Open `file` (a graph with the contract's `inputs` and `outputs`) with `delegate`. Throws
         * [EngineException] when the delegate refuses the model (the caller falls back, see `openWithFallback`).
         */
        fun open(file: File, inputs: List<String>, outputs: List<String>, delegate: Delegate, threads: Int): LiteRtEngine {
            val options = Interpreter.Options()
            val closeables = ArrayList<AutoCloseable>()
            try {
                when (delegate) {
                    Delegate.XNNPACK -> {
                        options.setUseXNNPACK(true)
                        options.setNumThreads(threads)
                    }
                    Delegate.GPU -> {
                        val compatibility = CompatibilityList()
                        closeables.add(compatibility)
                        if (!compatibility.isDelegateSupportedOnThisDevice) {
                            throw EngineException("LiteRT's GPU delegate does not support this device's GPU")
                        }
                        val gpu = GpuDelegate(compatibility.bestOptionsForThisDevice)
                        closeables.add(gpu)
                        options.addDelegate(gpu)
                    }
                    Delegate.NNAPI -> {
                        val nnapi = NnApiDelegate()
                        closeables.add(nnapi)
                        options.addDelegate(nnapi)
                    }
                }
                val interpreter = Interpreter(file, options)
                return try {
                    bind(interpreter, closeables, file, inputs, outputs)
                } catch (e: EngineException) {
                    interpreter.close()
                    throw e
                }
            } catch (e: EngineException) {
                closeables.forEach { it.close() }
                throw e
            } catch (e: Exception) {  // a delegate that cannot take the model fails in Interpreter(...)
                closeables.forEach { it.close() }
                throw EngineException("${file.name}: ${e.message ?: e.javaClass.simpleName}", e)
            } catch (e: LinkageError) {  // a delegate whose native library is not in this build or on this device
                closeables.forEach { it.close() }
                throw EngineException("${file.name}: ${delegate.label} is not available (${e.message})", e)
            }
        }

        private fun bind(interpreter: Interpreter, closeables: List<AutoCloseable>, file: File, inputs: List<String>,
                         outputs: List<String>): LiteRtEngine {
            val keys = interpreter.signatureKeys
            if (keys.isEmpty()) throw EngineException("${file.name} has no signature (export it with pocketsam)")
            // the batch-1 signature (a decoder may carry a batched one beside it)
            val key = keys.firstOrNull { k ->
                interpreter.getSignatureInputs(k).all { n -> interpreter.getInputTensorFromSignature(n, k).shape().firstOrNull() == 1 }
            } ?: keys[0]
            val inputMap = nameMap(file, key, "inputs", interpreter.getSignatureInputs(key).toList(), inputs, "args_")
            val outputMap = nameMap(file, key, "outputs", interpreter.getSignatureOutputs(key).toList(), outputs, "output_")
            return LiteRtEngine(interpreter, closeables, key, inputMap, outputMap)
        }

        /** {contract name: the file's name}: identical names, or positional ones in the contract's order. */
        private fun nameMap(file: File, key: String, kind: String, got: List<String>, want: List<String>,
                            positional: String): Map<String, String> {
            if (got.toSet() == want.toSet()) return want.associateWith { it }
            val byPosition = got.filter { it.startsWith(positional) }
                .sortedBy { it.removePrefix(positional).toIntOrNull() ?: Int.MAX_VALUE }
            if (byPosition.size == got.size && got.size == want.size) return want.zip(byPosition).toMap()
            throw EngineException("${file.name}: signature $key $kind ${got.sorted()} are not pocketsam's ${want.sorted()} " +
                "(not a pocketsam graph, or another spec version)")
        }
    }
}
