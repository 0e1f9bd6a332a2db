package org.pocketsam.core

/**
 * What the user has clicked on the current image, in the original frame: include points (tap), exclude points
 * (long-press) and at most one box (drag; a new drag replaces it). Every change can be undone in order; [clear]
 * forgets everything (and is itself undoable, so a slip costs nothing). The app turns it into a [Prompt] after each
 * change and keeps the chosen multimask output here too, so a new prompt starts from the best mask again.
 */
class Interaction(private val contract: Contract) {
    /** One point in the original frame. */
    data class Point(val x: Double, val y: Double, val include: Boolean)

    /** A box in the original frame, corners in any order (normalised by [prompt]). */
    data class Box(val x0: Double, val y0: Double, val x1: Double, val y1: Double)

    private data class State(val points: List<Point>, val box: Box?)

    private var state = State(emptyList(), null)
    private val history = ArrayList<State>()

    val points: List<Point> get() = state.points
    val box: Box? get() = state.box

    /** The multimask output the user chose (0..2), or null for the one with the best predicted IoU. */
    var chosenMask: Int? = null

    val isEmpty: Boolean get() = state.points.isEmpty() && state.box == null
    val canUndo: Boolean get() = history.isNotEmpty()

    private fun change(next: State) {
        history.add(state)
        state = next
        chosenMask = null
    }

    fun include(x: Double, y: Double) = change(State(state.points + Point(x, y, true), state.box))

    fun exclude(x: Double, y: Double) = change(State(state.points + Point(x, y, false), state.box))

    fun setBox(x0: Double, y0: Double, x1: Double, y1: Double) = change(State(state.points, Box(x0, y0, x1, y1)))

    /** Forget every point and the box (undoable). */
    fun clear() {
        if (!isEmpty) change(State(emptyList(), null))
    }

    /** Undo the last change; false when there is none. */
    fun undo(): Boolean {
        if (history.isEmpty()) return false
        state = history.removeAt(history.size - 1)
        chosenMask = null
        return true
    }

    /** Forget everything, history included (a new image). */
    fun reset() {
        state = State(emptyList(), null)
        history.clear()
        chosenMask = null
    }

    /** The prompt of the current points and box, or null when there are none. Box corners are put in order. */
    fun prompt(): Prompt? {
        if (isEmpty) return null
        val xy = DoubleArray(state.points.size * 2)
        state.points.forEachIndexed { i, p -> xy[2 * i] = p.x; xy[2 * i + 1] = p.y }
        val labels = IntArray(state.points.size) {
            if (state.points[it].include) contract.labels.foreground else contract.labels.background
        }
        val b = state.box?.let { doubleArrayOf(minOf(it.x0, it.x1), minOf(it.y0, it.y1), maxOf(it.x0, it.x1), maxOf(it.y0, it.y1)) }
        return Prompt(xy, labels, b)
    }

    /** The mask to show of `prediction`: the chosen one, else the best predicted IoU. */
    fun shownMask(prediction: Prediction): Int = chosenMask?.takeIf { it < prediction.count } ?: prediction.bestIndex
}

/** The ways the app can run a LiteRT model, in the order it falls back through them. */
enum class Delegate(val label: String) {
    /** The CPU through XNNPACK, with a thread count. */
    XNNPACK("xnnpack"),
    GPU("gpu"),
    NNAPI("nnapi");

    companion object {
        /** `requested` first, then XNNPACK: the CPU path every device has. */
        fun fallbackOrder(requested: Delegate): List<Delegate> =
            if (requested == XNNPACK) listOf(XNNPACK) else listOf(requested, XNNPACK)
    }
}

/** What [openWithFallback] opened: the value, the delegate that took the model, and a message for the user when
 *  it is not the one they asked for (null when it is). */
class Opened<T>(val value: T, val delegate: Delegate, val message: String?)

/**
 * Open something (the two graphs of a bundle) with `requested`, falling back along [Delegate.fallbackOrder] when a
 * delegate refuses the model ([EngineException]: a GPU without the ops, an NNAPI driver that rejects it, a missing
 * native library). The message says which delegate refused and why, for the screen. Throws the last refusal when
 * no delegate takes the model.
 */
fun <T> openWithFallback(requested: Delegate, open: (Delegate) -> T): Opened<T> {
    val refusals = ArrayList<String>()
    var last: EngineException? = null
    for (d in Delegate.fallbackOrder(requested)) {
        try {
            val value = open(d)
            val message = if (refusals.isEmpty()) null else refusals.joinToString("; ") + "; running on ${d.label} instead"
            return Opened(value, d, message)
        } catch (e: EngineException) {
            refusals.add("${d.label} refused the model (${e.message})")
            last = e
        }
    }
    throw EngineException(refusals.joinToString("; "), last)
}
