package org.pocketsam.demo

import android.app.Application
import android.graphics.Bitmap
import android.net.Uri
import android.os.Build
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.pocketsam.core.BenchRow
import org.pocketsam.core.Benchmark
import org.pocketsam.core.BundleManifest
import org.pocketsam.core.Contract
import org.pocketsam.core.Delegate
import org.pocketsam.core.DeviceInfo
import org.pocketsam.core.Interaction
import org.pocketsam.core.Pixels
import org.pocketsam.core.PocketSamException
import org.pocketsam.core.Prediction
import org.pocketsam.core.SegmentSession
import java.io.File
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.concurrent.Executors

/** What the screen shows. Bitmaps are immutable once published. */
data class UiState(
    val bundles: List<String> = emptyList(),
    val bundle: String? = null,
    /** E.g. "litert 2.2.0, gpu"; null when no bundle is open. */
    val engine: String? = null,
    /** "random weights, seed 0": such masks are not meaningful segmentations, and the screen says so. */
    val weights: String? = null,
    val delegate: Delegate = Delegate.XNNPACK,
    val threads: Int = 4,
    val photo: Bitmap? = null,
    val overlay: Bitmap? = null,
    val points: List<Interaction.Point> = emptyList(),
    val box: Interaction.Box? = null,
    /** The predicted IoU of each multimask output, and the one shown. */
    val scores: List<Float> = emptyList(),
    val shown: Int = 0,
    val canUndo: Boolean = false,
    /** What runs now ("encoder" ...), or null when idle: the progress indicator. */
    val busy: String? = null,
    /** The last problem or notice, shown until dismissed (a refused delegate, a bad bundle, a photo that cannot be
     *  decoded). */
    val message: String? = null,
    val bench: BenchState = BenchState()
)

data class BenchState(
    val running: Boolean = false,
    val done: Int = 0,
    val total: Int = 0,
    /** "delegate part" -> median ms */
    val medians: List<Triple<String, String, Double>> = emptyList(),
    val savedTo: String? = null
)

/**
 * The demo's state and work. Every engine call runs on ONE worker thread: LiteRT's interpreter is not thread-safe,
 * its GPU delegate must run on the thread that created it, and the session is used by one thread at a time.
 */
class DemoViewModel(app: Application) : AndroidViewModel(app) {
    private val worker = Executors.newSingleThreadExecutor { r -> Thread(r, "pocketsam-engine") }.asCoroutineDispatcher()
    private val contract: Contract = app.assets.open("contract.json").use { Contract.parse(it.reader().readText()) }
    private val interaction = Interaction(contract)
    private val _state = MutableStateFlow(UiState(threads = minOf(4, Runtime.getRuntime().availableProcessors())))
    val state: StateFlow<UiState> = _state

    private var manifest: BundleManifest? = null
    private var opened: OpenedBundle? = null
    private var session: SegmentSession? = null
    private var photo: Photo? = null
    private var prediction: Prediction? = null

    /** Where bundles are looked for: `<app's external files>/bundles/<name>/` (adb push there), and the same
     *  under the internal files folder. */
    private fun bundleRoots(): List<File> = listOfNotNull(getApplication<Application>().getExternalFilesDir(null),
        getApplication<Application>().filesDir).map { File(it, "bundles") }

    init {
        refreshBundles()
    }

    fun refreshBundles() {
        val names = bundleRoots().flatMap { root -> root.listFiles()?.filter { it.isDirectory }?.map { it.name } ?: emptyList() }
        _state.update { it.copy(bundles = names.distinct().sorted()) }
        if (manifest == null && names.isNotEmpty()) openBundle(names.sorted()[0])
        if (names.isEmpty()) notify("No bundle found: push one into ${bundleRoots()[0]} (see the README)")
    }

    fun dismissMessage() = _state.update { it.copy(message = null) }

    private fun notify(message: String) = _state.update { it.copy(message = message) }

    /** Run `block` on the worker; a [PocketSamException] becomes the visible message, never a crash. */
    private fun work(stage: String, block: suspend () -> Unit) {
        viewModelScope.launch {
            _state.update { it.copy(busy = stage) }
            try {
                block()
            } catch (e: PocketSamException) {
                notify(e.message ?: e.javaClass.simpleName)
            } catch (e: IllegalArgumentException) {  // a core precondition: still a message, not a crash
                notify("cannot do that: ${e.message}")
            } catch (e: OutOfMemoryError) {
                notify("out of memory: try a smaller bundle or photo")
            } finally {
                _state.update { it.copy(busy = null) }
            }
        }
    }

    fun openBundle(name: String) = work("opening $name") {
        val dir = bundleRoots().map { File(it, name) }.firstOrNull { it.isDirectory } ?: File(bundleRoots()[0], name)
        withContext(worker) {
            closeEngines()
            manifest = null
            val m = BundleManifest.read(dir, contract)  // refuses missing parts, another spec version, bad hashes
            manifest = m
            _state.update { it.copy(bundle = name, weights = m.checkpointDescription, engine = null) }
            openEngines()
        }
    }

    fun setDelegate(delegate: Delegate, threads: Int) {
        _state.update { it.copy(delegate = delegate, threads = threads) }
        if (manifest != null) work("opening ${delegate.label}") { withContext(worker) { closeEngines(); openEngines() } }
    }

    /** On the worker: open the engines (falling back with a message when the delegate refuses), then re-encode
     *  the current photo with them. */
    private fun openEngines() {
        val m = manifest ?: return
        val s = _state.value
        val result = Engines.openOrFallBack(m, contract, s.delegate, s.threads)
        opened = result.value
        session = result.value.session(contract)
        _state.update { it.copy(engine = result.value.description, delegate = result.delegate) }
        result.message?.let { notify(it) }
        photo?.let { encode(it) }
    }

    private fun closeEngines() {
        session = null
        opened?.close()
        opened = null
    }

    fun pickPhoto(uri: Uri) = work("decoding the photo") {
        val p = withContext(worker) { Photos.fromUri(getApplication(), uri) }
        usePhoto(p)
    }

    fun useSample() = work("decoding the sample") {
        usePhoto(withContext(worker) { Photos.sample(getApplication()) })
    }

    private suspend fun usePhoto(p: Photo) {
        photo = p
        prediction = null
        interaction.reset()
        _state.update { it.copy(photo = p.bitmap, overlay = null, scores = emptyList(), points = emptyList(), box = null, canUndo = false) }
        withContext(worker) { encode(p) }
    }

    /** On the worker: the image's embedding, once per photo (and per engine). */
    private fun encode(p: Photo) {
        val s = session ?: throw PocketSamException("open a bundle first")
        s.setImage(p.rgb) { stage -> _state.update { it.copy(busy = "$stage …") } }
        if (!interaction.isEmpty) decode()
    }

    fun tap(x: Double, y: Double) = edit { interaction.include(x, y) }
    fun longPress(x: Double, y: Double) = edit { interaction.exclude(x, y) }
    fun drag(x0: Double, y0: Double, x1: Double, y1: Double) = edit { interaction.setBox(x0, y0, x1, y1) }
    fun undo() = edit { interaction.undo() }
    fun clear() = edit { interaction.clear() }

    fun chooseMask(i: Int) {
        interaction.chosenMask = i
        prediction?.let { showPrediction(it) }
    }

    private fun edit(change: () -> Unit) {
        if (photo == null) return notify("pick a photo or use the sample first")
        change()
        _state.update { it.copy(points = interaction.points, box = interaction.box, canUndo = interaction.canUndo) }
        work("decoder") { withContext(worker) { decode() } }
    }

    /** On the worker: the masks of the current prompt (or none when it is empty). */
    private fun decode() {
        val s = session ?: return
        if (!s.isImageSet) return  // encoding failed or runs still: decoded once it is set
        val prompt = interaction.prompt()
        if (prompt == null) {
            prediction = null
            _state.update { it.copy(overlay = null, scores = emptyList()) }
            return
        }
        val p = s.predict(prompt, multimask = true)
        prediction = p
        showPrediction(p)
    }

    private fun showPrediction(p: Prediction) {
        val shown = interaction.shownMask(p)
        val overlay = Bitmap.createBitmap(Pixels.overlay(p.mask(shown), OVERLAY), p.size.w, p.size.h, Bitmap.Config.ARGB_8888)
        _state.update { it.copy(overlay = overlay, scores = p.scores.toList(), shown = shown) }
    }

    /** Save the shown mask as a PNG (white on black, the photo's size) in the app's external Pictures folder. */
    fun saveMask() = work("saving") {
        val p = prediction ?: throw PocketSamException("no mask to save: tap the photo first")
        val file = withContext(worker) {
            val mask = Bitmap.createBitmap(Pixels.maskImage(p.mask(interaction.shownMask(p))), p.size.w, p.size.h, Bitmap.Config.ARGB_8888)
            val dir = getApplication<Application>().getExternalFilesDir("Pictures") ?: getApplication<Application>().filesDir
            val f = File(dir, "mask-${stamp()}.png")
            f.outputStream().use { mask.compress(Bitmap.CompressFormat.PNG, 100, it) }
            f
        }
        notify("saved ${file.absolutePath}")
    }

    /**
     * The benchmark screen: `runs` interleaved runs of every part with each of `delegates` (each opened as is: a
     * delegate that refuses the model is reported and left out, never replaced by another), on the current photo
     * or the sample; rows written as JSON in pocketsam's bench row schema (merge them with `pocketsam bench-merge`).
     */
    fun benchmark(delegates: List<Delegate>, runs: Int) {
        val m = manifest ?: return notify("open a bundle first")
        work("benchmark") {
            _state.update { it.copy(bench = BenchState(running = true)) }
            try {
                val image = photo ?: withContext(worker) { Photos.sample(getApplication()) }
                val path = withContext(worker) {
                    closeEngines()  // one set of models in memory per delegate, not two
                    val contenders = ArrayList<OpenedBundle>()
                    val refused = ArrayList<String>()
                    try {
                        for (d in delegates) {
                            try {
                                contenders.add(Engines.open(m, contract, d, _state.value.threads))
                            } catch (e: PocketSamException) {
                                refused.add("${d.label}: ${e.message}")
                            }
                        }
                        if (contenders.isEmpty()) throw PocketSamException("no delegate took the model: ${refused.joinToString("; ")}")
                        val bench = Benchmark(contract, image.rgb, runs)
                        val rows = bench.run(contenders.map { it.contender() }, deviceInfo()) { done, total ->
                            _state.update { it.copy(bench = it.bench.copy(done = done, total = total)) }
                        }
                        val medians = rows.map { Triple(it.contender.delegate ?: "", it.part, it.stats.medianMs) }
                        val dir = File(getApplication<Application>().getExternalFilesDir(null), "bench").apply { mkdirs() }
                        val file = File(dir, "android-bench-${stamp()}.json")
                        file.writeText(BenchRow.document(rows))
                        _state.update { it.copy(bench = it.bench.copy(medians = medians, savedTo = file.absolutePath)) }
                        if (refused.isNotEmpty()) notify("left out: ${refused.joinToString("; ")}")
                        file.absolutePath
                    } finally {
                        contenders.forEach { it.close() }
                        try {
                            openEngines()
                        } catch (e: PocketSamException) {
                            notify(e.message ?: "the engines could not be opened again")
                        }
                    }
                }
                notify("wrote $path")
            } finally {
                _state.update { it.copy(bench = it.bench.copy(running = false)) }
            }
        }
    }

    private fun deviceInfo(): DeviceInfo {
        val soc = if (Build.VERSION.SDK_INT >= 31) "${Build.SOC_MANUFACTURER} ${Build.SOC_MODEL}" else Build.HARDWARE
        return DeviceInfo(
            device = "${Build.MANUFACTURER} ${Build.MODEL}",
            cpu = soc,
            cores = Runtime.getRuntime().availableProcessors(),
            isa = Build.SUPPORTED_ABIS.toList(),
            os = "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})",
            machine = Build.SUPPORTED_ABIS.firstOrNull()
        )
    }

    private fun stamp(): String = SimpleDateFormat("yyyyMMdd-HHmmss", Locale.ROOT).format(Date())

    override fun onCleared() {
        worker.executor.execute { closeEngines() }  // on the thread that opened them (the GPU delegate's rule)
        worker.close()  // runs what is queued, then stops
    }

    companion object {
        /** The mask overlay: translucent blue. */
        const val OVERLAY = 0x801E90FF.toInt()
    }
}
