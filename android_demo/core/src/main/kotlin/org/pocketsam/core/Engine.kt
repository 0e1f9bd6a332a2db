package org.pocketsam.core

/**
 * A float32 tensor: `data` in row-major (C) order and its `shape`. Every graph input and output of pocketsam's
 * spec is float32 (labels included: the graphs handle them by arithmetic).
 */
class FloatTensor(val shape: IntArray, val data: FloatArray) {
    init {
        require(shape.all { it >= 0 } && shape.fold(1L) { a, b -> a * b } == data.size.toLong()) {
            "FloatTensor: shape ${shape.joinToString("x")} needs ${shape.fold(1L) { a, b -> a * b }} values, got ${data.size}"
        }
    }

    /** The number of values. */
    val size: Int get() = data.size

    override fun toString(): String = "FloatTensor(${shape.joinToString("x")})"

    companion object {
        /** A tensor of `shape` with every value `value`. */
        fun filled(shape: IntArray, value: Float = 0f): FloatTensor {
            val n = shape.fold(1) { a, b -> a * b }
            return FloatTensor(shape, FloatArray(n) { value })
        }
    }
}

/**
 * One graph of a bundle (the encoder or the decoder) in some engine: LiteRT or ONNX Runtime in the app, a replay
 * of the golden files in the tests. Names are the contract's (`Contract.inputsOf("decoder")` ...): an engine whose
 * file uses other names (LiteRT's positional `args_0`, `output_0`) maps them itself.
 */
interface Engine : AutoCloseable {
    /** The graph's input names, in the contract's order; a decoder with the image cache lists its inputs too. */
    val inputNames: List<String>
    val outputNames: List<String>

    /** Run the graph once on `feeds` (one tensor per input name) and return every output by name.
     *  Throws [EngineException] when the engine cannot run it. */
    fun run(feeds: Map<String, FloatTensor>): Map<String, FloatTensor>

    override fun close() {}
}

/** An [Engine] that remembers the feeds of its last call (benchmarks time the decoder on a real click's feeds). */
class RecordingEngine(private val inner: Engine) : Engine {
    override val inputNames: List<String> get() = inner.inputNames
    override val outputNames: List<String> get() = inner.outputNames

    /** The feeds of the last call, or null before the first. */
    var lastFeeds: Map<String, FloatTensor>? = null
        private set

    override fun run(feeds: Map<String, FloatTensor>): Map<String, FloatTensor> {
        lastFeeds = feeds
        return inner.run(feeds)
    }

    override fun close() = inner.close()
}
