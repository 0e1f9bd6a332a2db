package org.pocketsam.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** The app's gestures as prompts (tap, long-press, drag, undo, clear) and the delegate fallback. */
class InteractionTest {
    private val contract = Golden.contract
    private val fg = contract.labels.foreground.toFloat()
    private val bg = contract.labels.background.toFloat()

    @Test
    fun gesturesBecomePromptsAndUndoInOrder() {
        val ui = Interaction(contract)
        assertNull(ui.prompt())
        assertFalse(ui.canUndo)
        ui.include(10.0, 20.0)
        ui.exclude(30.0, 40.0)
        ui.setBox(50.0, 60.0, 5.0, 6.0)  // dragged up-left: corners are put in order
        var p = ui.prompt()!!
        assertArrayEquals(doubleArrayOf(10.0, 20.0, 30.0, 40.0), p.points, 0.0)
        assertArrayEquals(intArrayOf(contract.labels.foreground, contract.labels.background), p.labels)
        assertArrayEquals(doubleArrayOf(5.0, 6.0, 50.0, 60.0), p.box!!, 0.0)
        ui.setBox(1.0, 2.0, 3.0, 4.0)  // a new drag replaces the box ...
        ui.undo()                      // ... and undo brings the old one back
        assertArrayEquals(doubleArrayOf(5.0, 6.0, 50.0, 60.0), ui.prompt()!!.box!!, 0.0)
        ui.chosenMask = 2
        ui.clear()
        assertNull(ui.prompt())
        assertNull("a new prompt starts from the best mask", ui.chosenMask)
        assertTrue(ui.undo())  // clear is undoable
        assertEquals(2, ui.points.size)
        ui.undo(); ui.undo()
        p = ui.prompt()!!
        assertArrayEquals(doubleArrayOf(10.0, 20.0), p.points, 0.0)
        assertNull(p.box)
        assertTrue(ui.undo())
        assertFalse(ui.undo())
        assertTrue(ui.isEmpty)
        // the prompt's tokens: the include point then upstream's pad point
        ui.include(3.0, 4.0)
        ui.exclude(5.0, 6.0)
        val tokens = ui.prompt()!!.decoderTokens(Size(100, 100), contract)
        assertArrayEquals(floatArrayOf(fg, bg, contract.labels.pad.toFloat()), tokens.labels, 0f)
    }

    @Test
    fun shownMaskIsTheChosenOrTheBest() {
        val ui = Interaction(contract)
        val r = Prediction(3, Size(1, 1), BooleanArray(3), floatArrayOf(0.5f, 0.9f, 0.7f), FloatArray(3), 1)
        assertEquals(1, ui.shownMask(r))
        ui.chosenMask = 2
        assertEquals(2, ui.shownMask(r))
        val single = Prediction(1, Size(1, 1), BooleanArray(1), floatArrayOf(0.1f), FloatArray(1), 1)
        assertEquals(0, ui.shownMask(single))
    }

    @Test
    fun aRefusingDelegateFallsBackToXnnpackWithAMessage() {
        val opened = openWithFallback(Delegate.GPU) { d ->
            if (d == Delegate.GPU) throw EngineException("GATHER_ND is not supported") else "engine on ${d.label}"
        }
        assertEquals(Delegate.XNNPACK, opened.delegate)
        assertEquals("engine on xnnpack", opened.value)
        assertEquals("gpu refused the model (GATHER_ND is not supported); running on xnnpack instead", opened.message)
        val direct = openWithFallback(Delegate.NNAPI) { "engine on ${it.label}" }
        assertEquals(Delegate.NNAPI, direct.delegate)
        assertNull(direct.message)
        try {
            openWithFallback(Delegate.NNAPI) { throw EngineException("no driver for ${it.label}") }
            fail("nothing took the model")
        } catch (e: EngineException) {
            assertEquals("nnapi refused the model (no driver for nnapi); xnnpack refused the model (no driver for xnnpack)", e.message)
        }
    }
}
