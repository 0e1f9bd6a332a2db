package org.pocketsam.core

import java.io.File
import java.security.MessageDigest

/**
 * A bundle folder (`pocketsam export`): the manifest (named by the contract's bundle layout) and the model file of
 * each part. [read] checks what `pocketsam.runtime.bundle.load_bundle` checks, before any engine sees a file, so a
 * bad bundle is one clear message instead of a crash or wrong masks:
 * the folder and its manifest exist and parse; the spec version is the contract's; the format is known; every
 * field the app reads is present and of the right type; each part's file lies inside the folder and exists; both
 * parts come from the same weights; each file's sha256 is the manifest's. (The Python loader also reads each part's
 * own weights stamp from inside the model file; this reader does not parse model files.)
 */
class BundleManifest(
    val root: File,
    /** "tflite", "onnx", "coreml". */
    val format: String,
    val specVersion: String,
    val encoder: Part,
    val decoder: Part,
    /** E.g. "random weights, seed 0" or "mobile_sam.pt (sha256 a1b2…)". */
    val checkpointDescription: String,
    /** The parts were made from seeded synthetic weights: masks are not meaningful segmentations. */
    val isSynthetic: Boolean,
    /** The whole manifest, as parsed. */
    val json: Map<String, Any?>
) {
    /** One model file of the bundle. `shapes`: the graph's input shapes in this file (an axis name where dynamic). */
    class Part(
        val name: String,
        val file: File,
        val precision: String,
        val sha256: String,
        val sizeBytes: Long,
        val weightsId: String,
        val shapes: Map<String, List<Any?>>
    )

    /** The fixed point count of a fixed-shape decoder (TFLite), or null when its point axis is dynamic (ONNX). */
    val decoderPoints: Int?
        get() = (decoder.shapes["point_labels"]?.lastOrNull() as? Double)?.toInt()

    /** The folder's name: what benchmark rows call this contender. */
    val name: String get() = root.name

    companion object {
        /**
         * Read and check the bundle folder `root` against `contract`. `verifyHashes`: compare every part's sha256
         * with the manifest's (a 40 MB encoder takes a fraction of a second). Throws [BundleException].
         */
        fun read(root: File, contract: Contract, verifyHashes: Boolean = true): BundleManifest {
            val layout = contract.bundle
            if (!root.exists()) throw BundleException("$root: no such bundle folder")
            if (!root.isDirectory) throw BundleException("$root: a bundle is a folder with ${layout.manifest}, not a file")
            val file = File(root, layout.manifest)
            if (!file.isFile) throw BundleException("$root: not a pocketsam bundle (no ${layout.manifest})")
            val manifest = try {
                Json.parse(file.readText()) as? Map<*, *> ?: throw BundleException("$file: expected a JSON object")
            } catch (e: IllegalArgumentException) {
                throw BundleException("$file: not valid JSON (${e.message})")
            } catch (e: IndexOutOfBoundsException) {
                throw BundleException("$file: not valid JSON (it ends too early)")
            }
            @Suppress("UNCHECKED_CAST")
            val m = manifest as Map<String, Any?>
            val version = m["spec_version"]
            val versionText = if (version is Double && version == Math.floor(version)) version.toLong().toString() else version.toString()
            if (versionText != contract.specVersion) {
                throw BundleException("$root: spec version $versionText is not this app's ${contract.specVersion}; " +
                    "re-export the bundle with the pocketsam this app was built with")
            }
            val format = m["format"]
            if (format !is String || format !in layout.formatExtensions) {
                throw BundleException("$root: unknown format $format (known: ${layout.formatExtensions.keys.joinToString(", ")})")
            }
            validate(m, layout.parts)
            val parts = layout.parts.map { part(root, m, it, format) }
            val encoder = parts[layout.parts.indexOf("encoder")]
            val decoder = parts[layout.parts.indexOf("decoder")]
            if (encoder.weightsId != decoder.weightsId) {
                throw BundleException("$root: the encoder (${encoder.weightsId}) and the decoder (${decoder.weightsId}) " +
                    "come from different weights; export both parts from one checkpoint")
            }
            if (verifyHashes) for (p in parts) checkSha(p)
            val checkpoint = m.getValue("checkpoint").obj("checkpoint")
            return BundleManifest(root, format, versionText, encoder, decoder,
                checkpoint.at("description").str("checkpoint.description"), checkpoint["kind"] == "random", m)
        }

        // --- the manifest's schema: every value read here, checked once ------------------------------------------

        private val SHA256 = Regex("[0-9a-f]{64}")

        private fun isCount(v: Any?): Boolean = v is Double && v >= 0 && v == Math.floor(v)
        private fun text(v: Any?): String? = if (v is String && v.isNotEmpty()) null else "a non-empty string"
        private fun sha(v: Any?): String? = if (v is String && SHA256.matches(v)) null else "a sha256 (64 hex digits)"
        private fun size(v: Any?): String? = if (isCount(v)) null else "a byte count"
        private fun fileName(v: Any?): String? =
            if (v is String && v !in listOf("", ".", "..") && '/' !in v && '\\' !in v) null
            else "a file name inside the bundle folder (no folders, no '..')"
        private fun shapes(v: Any?): String? {
            val ok = v is Map<*, *> && v.all { (k, dims) ->
                k is String && dims is List<*> && dims.all { it is String || isCount(it) }
            }
            return if (ok) null else "{input name: [dims]}, each dim an int or an axis name"
        }
        private fun kind(v: Any?): String? = if (v == "random" || v == "file") null else "'random' or 'file'"

        private val PART_SCHEMA: Map<String, (Any?) -> String?> = linkedMapOf(
            "file" to ::fileName, "precision" to ::text, "sha256" to ::sha, "size_bytes" to ::size,
            "weights_id" to ::text, "shapes" to ::shapes)
        private val CHECKPOINT_SCHEMA: Map<String, (Any?) -> String?> = linkedMapOf(
            "kind" to ::kind, "description" to ::text)

        private fun shown(v: Any?): String {
            val s = when (v) {
                null -> "null"
                is String -> "\"$v\""
                else -> v.toString()
            }
            return if (s.length > 40) s.substring(0, 40) else s
        }

        private fun checkFields(where: String, obj: Any?, schema: Map<String, (Any?) -> String?>, errors: MutableList<String>) {
            if (obj !is Map<*, *>) {
                errors.add("$where: expected an object, got ${shown(obj)}")
                return
            }
            for ((key, check) in schema) {
                if (!obj.containsKey(key)) {
                    errors.add("$where.$key: missing")
                } else {
                    val expected = check(obj[key])
                    if (expected != null) errors.add("$where.$key: expected $expected, got ${shown(obj[key])}")
                }
            }
        }

        /** BundleException("bundle manifest invalid: …") naming (up to 3 of) the fields that are missing or of the
         *  wrong type, as `pocketsam.runtime.bundle.validate_manifest`. */
        private fun validate(m: Map<String, Any?>, parts: List<String>) {
            val errors = ArrayList<String>()
            val p = m["parts"]
            if (p !is Map<*, *>) {
                errors.add("parts: expected an object with ${parts.joinToString(" and ")}, got ${shown(p)}")
            } else {
                for (part in parts) checkFields("parts.$part", p[part], PART_SCHEMA, errors)
            }
            val checkpoint = m["checkpoint"]
            checkFields("checkpoint", checkpoint, CHECKPOINT_SCHEMA, errors)
            if (checkpoint is Map<*, *> && checkpoint["kind"] == "random") {
                val seed = checkpoint["seed"]
                if (!(seed is Double && seed == Math.floor(seed))) errors.add("checkpoint.seed: expected an int, got ${shown(seed)}")
            }
            if (errors.isNotEmpty()) {
                val more = if (errors.size > 3) " (and ${errors.size - 3} more)" else ""
                throw BundleException("bundle manifest invalid: " + errors.take(3).joinToString("; ") + more)
            }
        }

        private fun part(root: File, m: Map<String, Any?>, name: String, format: String): Part {
            val entry = m.getValue("parts").obj("parts").getValue(name).obj(name)
            val fileName = entry.getValue("file") as String
            val path = File(root, fileName)
            if (!path.exists()) throw BundleException("$root: the $name file $fileName is missing")
            val inside = root.canonicalFile
            val real = path.canonicalFile
            if (real.parentFile != inside) throw BundleException("$root: the $name file $fileName links to $real, outside the bundle folder")
            val folderPart = format == "coreml"  // a CoreML part is an .mlpackage folder
            if (folderPart && !real.isDirectory) throw BundleException("$root: the $name $fileName must be a .mlpackage folder")
            if (!folderPart && !real.isFile) throw BundleException("$root: the $name file $fileName is not a regular file")
            @Suppress("UNCHECKED_CAST")
            val shapes = (entry.getValue("shapes") as Map<String, List<Any?>>)
            return Part(name, path, entry.getValue("precision") as String, entry.getValue("sha256") as String,
                (entry.getValue("size_bytes") as Double).toLong(), entry.getValue("weights_id") as String, shapes)
        }

        private fun checkSha(part: Part) {
            val actual = sha256Of(part.file)
            if (actual != part.sha256) {
                throw BundleException("${part.file}: sha256 ${actual.substring(0, 12)}… does not match the manifest's " +
                    "${part.sha256.substring(0, 12)}… (the ${part.name} file is truncated, modified or from another export)")
            }
        }

        /** sha256 of a file, or of every file of a folder (CoreML's .mlpackage) in the order of their relative
         *  paths, each preceded by its path and a NUL, as `pocketsam.runtime.bundle.sha256_of`. */
        fun sha256Of(path: File): String {
            val digest = MessageDigest.getInstance("SHA-256")
            val buffer = ByteArray(1 shl 20)
            fun feed(f: File) = f.inputStream().use { s ->
                while (true) {
                    val n = s.read(buffer)
                    if (n < 0) break
                    digest.update(buffer, 0, n)
                }
            }
            if (path.isFile) {
                feed(path)
            } else {
                val files = path.walkTopDown().filter { it.isFile }.map { it.relativeTo(path).path }.toList()
                // Python sorts paths part by part
                val sorted = files.sortedWith(Comparator { a, b -> comparePaths(a.split('/'), b.split('/')) })
                for (rel in sorted) {
                    digest.update((rel + "\u0000").toByteArray(Charsets.UTF_8))
                    feed(File(path, rel))
                }
            }
            return digest.digest().joinToString("") { String.format("%02x", it) }
        }

        private fun comparePaths(a: List<String>, b: List<String>): Int {
            for (i in 0 until minOf(a.size, b.size)) {
                val c = a[i].compareTo(b[i])
                if (c != 0) return c
            }
            return a.size - b.size
        }
    }
}
