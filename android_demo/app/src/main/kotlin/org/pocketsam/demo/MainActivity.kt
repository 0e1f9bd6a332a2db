package org.pocketsam.demo

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.compose.setContent
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.activity.viewModels
import androidx.compose.foundation.Canvas
import androidx.compose.foundation.Image
import androidx.compose.foundation.gestures.detectDragGestures
import androidx.compose.foundation.gestures.detectTapGestures
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.BoxWithConstraints
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.Checkbox
import androidx.compose.material3.DropdownMenu
import androidx.compose.material3.DropdownMenuItem
import androidx.compose.material3.FilterChip
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Slider
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.geometry.Offset
import androidx.compose.ui.geometry.Size
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.graphics.drawscope.Stroke
import androidx.compose.ui.input.pointer.pointerInput
import androidx.compose.ui.layout.ContentScale
import androidx.compose.ui.platform.LocalDensity
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import org.pocketsam.core.Delegate

/**
 * The demo's one activity: the segmentation screen (bundle and delegate pickers, the photo with its mask overlay,
 * tap = include point, long-press = exclude point, drag = box, the 3 masks with their predicted IoU, undo, clear,
 * save) and the benchmark screen.
 */
class MainActivity : ComponentActivity() {
    private val model: DemoViewModel by viewModels()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent {
            MaterialTheme {
                var benchmark by remember { mutableStateOf(false) }
                val state by model.state.collectAsStateWithLifecycle()
                Column(Modifier.fillMaxSize().padding(8.dp)) {
                    Header(state, model, benchmark) { benchmark = it }
                    state.busy?.let { Busy(it) }
                    state.message?.let { Message(it) { model.dismissMessage() } }
                    if (benchmark) BenchmarkScreen(state, model) else SegmentScreen(state, model)
                }
            }
        }
    }
}

@Composable
private fun Header(state: UiState, model: DemoViewModel, benchmark: Boolean, showBenchmark: (Boolean) -> Unit) {
    var bundlesOpen by remember { mutableStateOf(false) }
    Row(verticalAlignment = Alignment.CenterVertically, horizontalArrangement = Arrangement.spacedBy(8.dp)) {
        Box {
            OutlinedButton(onClick = { model.refreshBundles(); bundlesOpen = true }) { Text(state.bundle ?: "bundle…") }
            DropdownMenu(expanded = bundlesOpen, onDismissRequest = { bundlesOpen = false }) {
                for (name in state.bundles) {
                    DropdownMenuItem(text = { Text(name) }, onClick = { bundlesOpen = false; model.openBundle(name) })
                }
            }
        }
        TextButton(onClick = { showBenchmark(!benchmark) }) { Text(if (benchmark) "segment" else "benchmark") }
    }
    Text(state.engine ?: "no engine open", style = MaterialTheme.typography.bodySmall)
    state.weights?.let { Text(it, style = MaterialTheme.typography.bodySmall) }
    DelegatePicker(state, model)
}

/** XNNPACK (with a thread count), GPU or NNAPI; the view model falls back to XNNPACK with a message when the chosen
 *  delegate refuses the model. */
@Composable
private fun DelegatePicker(state: UiState, model: DemoViewModel) {
    Row(verticalAlignment = Alignment.CenterVertically, horizontalArrangement = Arrangement.spacedBy(4.dp)) {
        for (d in Delegate.values()) {
            FilterChip(selected = state.delegate == d, enabled = state.busy == null,
                onClick = { model.setDelegate(d, state.threads) }, label = { Text(d.label) })
        }
    }
    if (state.delegate == Delegate.XNNPACK) {
        val cores = Runtime.getRuntime().availableProcessors()
        var threads by remember(state.threads) { mutableStateOf(state.threads.toFloat()) }
        Row(verticalAlignment = Alignment.CenterVertically) {
            Text("threads ${threads.toInt()}")
            Slider(value = threads, onValueChange = { threads = it }, valueRange = 1f..cores.toFloat(),
                steps = maxOf(0, cores - 2), enabled = state.busy == null,
                onValueChangeFinished = { model.setDelegate(Delegate.XNNPACK, threads.toInt()) },
                modifier = Modifier.weight(1f))
        }
    }
}

@Composable
private fun Busy(stage: String) {
    Column(Modifier.fillMaxWidth().padding(vertical = 4.dp)) {
        LinearProgressIndicator(Modifier.fillMaxWidth())
        Text(stage, style = MaterialTheme.typography.bodySmall)
    }
}

@Composable
private fun Message(text: String, dismiss: () -> Unit) {
    Card(Modifier.fillMaxWidth().padding(vertical = 4.dp)) {
        Row(verticalAlignment = Alignment.CenterVertically) {
            Text(text, Modifier.weight(1f).padding(8.dp))
            TextButton(onClick = dismiss) { Text("OK") }
        }
    }
}

@Composable
private fun SegmentScreen(state: UiState, model: DemoViewModel) {
    val picker = rememberLauncherForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) model.pickPhoto(uri)
    }
    Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
        Button(onClick = { picker.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly)) }) {
            Text("photo")
        }
        OutlinedButton(onClick = { model.useSample() }) { Text("sample") }
        OutlinedButton(onClick = { model.undo() }, enabled = state.canUndo) { Text("undo") }
        OutlinedButton(onClick = { model.clear() }, enabled = state.points.isNotEmpty() || state.box != null) { Text("clear") }
    }
    if (state.scores.isNotEmpty()) {
        Row(verticalAlignment = Alignment.CenterVertically, horizontalArrangement = Arrangement.spacedBy(4.dp)) {
            state.scores.forEachIndexed { i, iou ->
                FilterChip(selected = state.shown == i, onClick = { model.chooseMask(i) },
                    label = { Text("mask ${i + 1}: IoU %.3f".format(iou)) })
            }
            TextButton(onClick = { model.saveMask() }) { Text("save PNG") }
        }
    }
    val photo = state.photo
    if (photo == null) {
        Text("Pick a photo or use the sample. Tap: include point; long-press: exclude point; drag: box.",
            Modifier.padding(16.dp))
        return
    }
    PhotoWithMask(state, photo, model)
}

/** The photo fitted into the available space, its mask overlay, the points and the box; touches are mapped to
 *  the photo's original frame (pixels from its top-left corner) before they reach the view model. */
@Composable
private fun PhotoWithMask(state: UiState, photo: android.graphics.Bitmap, model: DemoViewModel) {
    BoxWithConstraints(Modifier.fillMaxSize()) {
        val density = LocalDensity.current
        val boxW = with(density) { maxWidth.toPx() }
        val boxH = with(density) { maxHeight.toPx() }
        val scale = minOf(boxW / photo.width, boxH / photo.height)
        val left = (boxW - photo.width * scale) / 2
        val top = (boxH - photo.height * scale) / 2
        fun toImage(o: Offset): Pair<Double, Double>? {
            val x = ((o.x - left) / scale).toDouble()
            val y = ((o.y - top) / scale).toDouble()
            return if (x in 0.0..photo.width.toDouble() && y in 0.0..photo.height.toDouble()) Pair(x, y) else null
        }
        fun toScreen(x: Double, y: Double) = Offset(left + x.toFloat() * scale, top + y.toFloat() * scale)
        var dragStart by remember { mutableStateOf<Offset?>(null) }
        var dragNow by remember { mutableStateOf<Offset?>(null) }

        Image(photo.asImageBitmap(), contentDescription = "photo", contentScale = ContentScale.Fit, modifier = Modifier.fillMaxSize())
        state.overlay?.let {
            Image(it.asImageBitmap(), contentDescription = "mask", contentScale = ContentScale.Fit, modifier = Modifier.fillMaxSize())
        }
        Canvas(Modifier.fillMaxSize()
            .pointerInput(photo, scale, left, top) {
                detectTapGestures(
                    onTap = { o -> toImage(o)?.let { (x, y) -> model.tap(x, y) } },
                    onLongPress = { o -> toImage(o)?.let { (x, y) -> model.longPress(x, y) } })
            }
            .pointerInput(photo, scale, left, top) {
                detectDragGestures(
                    onDragStart = { o -> dragStart = o; dragNow = o },
                    onDrag = { change, _ -> dragNow = change.position },
                    onDragEnd = {
                        val a = dragStart?.let { toImage(it) }
                        val b = dragNow?.let { o ->
                            // clamp the end to the photo: a drag may leave it
                            toImage(Offset(o.x.coerceIn(left, left + photo.width * scale), o.y.coerceIn(top, top + photo.height * scale)))
                        }
                        if (a != null && b != null) model.drag(a.first, a.second, b.first, b.second)
                        dragStart = null; dragNow = null
                    },
                    onDragCancel = { dragStart = null; dragNow = null })
            }) {
            for (p in state.points) {
                drawCircle(if (p.include) Color.Green else Color.Red, radius = 12f, center = toScreen(p.x, p.y))
                drawCircle(Color.White, radius = 12f, center = toScreen(p.x, p.y), style = Stroke(3f))
            }
            state.box?.let { b ->
                val a = toScreen(minOf(b.x0, b.x1), minOf(b.y0, b.y1))
                val c = toScreen(maxOf(b.x0, b.x1), maxOf(b.y0, b.y1))
                drawRect(Color.Yellow, topLeft = a, size = Size(c.x - a.x, c.y - a.y), style = Stroke(4f))
            }
            val s = dragStart
            val e = dragNow
            if (s != null && e != null) {
                drawRect(Color.Yellow.copy(alpha = 0.6f), topLeft = Offset(minOf(s.x, e.x), minOf(s.y, e.y)),
                    size = Size(kotlin.math.abs(e.x - s.x), kotlin.math.abs(e.y - s.y)), style = Stroke(2f))
            }
        }
    }
}

/** N interleaved runs per chosen delegate; medians on screen, the rows as bench-schema JSON in the app's files. */
@Composable
private fun BenchmarkScreen(state: UiState, model: DemoViewModel) {
    var runs by remember { mutableStateOf(10f) }
    var chosen by remember { mutableStateOf(setOf(Delegate.XNNPACK, Delegate.GPU, Delegate.NNAPI)) }
    Column(Modifier.verticalScroll(rememberScrollState())) {
        Text("Times the encoder, the decoder, a click (decoder + post-processing) and an image's first click " +
            "on the current photo (or the sample), interleaving the delegates run by run. A delegate that refuses " +
            "the model is left out, never replaced.", style = MaterialTheme.typography.bodySmall)
        Row(verticalAlignment = Alignment.CenterVertically) {
            Text("runs ${runs.toInt()}")
            Slider(value = runs, onValueChange = { runs = it }, valueRange = 3f..50f, modifier = Modifier.weight(1f))
        }
        for (d in Delegate.values()) {
            Row(verticalAlignment = Alignment.CenterVertically) {
                Checkbox(checked = d in chosen, onCheckedChange = { on -> chosen = if (on) chosen + d else chosen - d })
                Text(d.label + if (d == Delegate.XNNPACK) " (${state.threads} threads)" else "")
            }
        }
        Button(enabled = !state.bench.running && chosen.isNotEmpty() && state.bundle != null,
            onClick = { model.benchmark(Delegate.values().filter { it in chosen }, runs.toInt()) }) { Text("run") }
        if (state.bench.running && state.bench.total > 0) {
            LinearProgressIndicator(progress = { state.bench.done.toFloat() / state.bench.total }, modifier = Modifier.fillMaxWidth())
        }
        if (state.bench.medians.isNotEmpty()) {
            Text("median ms", style = MaterialTheme.typography.titleSmall)
            for ((delegate, part, ms) in state.bench.medians) Text("%-8s %-8s %9.1f".format(delegate, part, ms))
            state.bench.savedTo?.let { Text("rows: $it (pocketsam bench-merge reads them)", style = MaterialTheme.typography.bodySmall) }
        }
    }
}
