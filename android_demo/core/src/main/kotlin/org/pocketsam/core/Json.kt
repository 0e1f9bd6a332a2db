package org.pocketsam.core

/**
 * A minimal JSON reader (objects -> Map, arrays -> List, numbers -> Double, true/false, null, strings), enough for
 * pocketsam's `contract.json` and the golden files without a dependency. Numbers are parsed with
 * `String.toDouble()`, which rounds exactly like Python's float repr round-trips: the float64 values Python wrote
 * come back bit for bit.
 */
object Json {
    fun parse(text: String): Any? {
        val p = Parser(text)
        val value = p.value()
        p.skipSpace()
        if (p.pos != text.length) throw IllegalArgumentException("JSON: trailing text at offset ${p.pos}")
        return value
    }

    /**
     * `value` as JSON text: maps (string keys, in their order), lists, arrays of numbers, strings, numbers,
     * booleans and null, indented by `indent` spaces per level like Python's `json.dumps(indent=1)`. A non-finite
     * number is written as null (JSON has no NaN).
     */
    fun write(value: Any?, indent: Int = 1): String {
        val out = StringBuilder()
        writeValue(out, value, indent, 0)
        return out.toString()
    }

    private fun writeValue(out: StringBuilder, v: Any?, indent: Int, depth: Int) {
        when (v) {
            null -> out.append("null")
            is Boolean -> out.append(v.toString())
            is Int, is Long, is Short, is Byte -> out.append(v.toString())
            is Number -> {
                val d = v.toDouble()
                out.append(if (d.isNaN() || d.isInfinite()) "null" else d.toString())
            }
            is String -> writeString(out, v)
            is Map<*, *> -> writeItems(out, v.entries.toList(), '{', '}', indent, depth) { e ->
                writeString(out, e.key.toString()); out.append(": "); writeValue(out, e.value, indent, depth + 1)
            }
            is List<*> -> writeItems(out, v, '[', ']', indent, depth) { writeValue(out, it, indent, depth + 1) }
            is IntArray -> writeValue(out, v.toList(), indent, depth)
            is FloatArray -> writeValue(out, v.map { it.toDouble() }, indent, depth)
            is DoubleArray -> writeValue(out, v.toList(), indent, depth)
            else -> throw IllegalArgumentException("JSON: cannot write a ${v.javaClass.name}")
        }
    }

    private fun <T> writeItems(out: StringBuilder, items: List<T>, open: Char, close: Char, indent: Int, depth: Int,
                               item: (T) -> Unit) {
        out.append(open)
        if (items.isEmpty()) { out.append(close); return }
        items.forEachIndexed { i, it ->
            if (i > 0) out.append(',')
            out.append('\n').append(" ".repeat(indent * (depth + 1)))
            item(it)
        }
        out.append('\n').append(" ".repeat(indent * depth)).append(close)
    }

    private fun writeString(out: StringBuilder, s: String) {
        out.append('"')
        for (c in s) {
            when {
                c == '"' -> out.append("\\\"")
                c == '\\' -> out.append("\\\\")
                c == '\n' -> out.append("\\n")
                c < ' ' -> out.append(String.format("\\u%04x", c - '\u0000'))
                else -> out.append(c)
            }
        }
        out.append('"')
    }

    private class Parser(val s: String) {
        var pos = 0

        fun skipSpace() {
            while (pos < s.length && s[pos].isWhitespace()) pos++
        }

        fun value(): Any? {
            skipSpace()
            if (pos >= s.length) throw IllegalArgumentException("JSON: unexpected end")
            return when (val c = s[pos]) {
                '{' -> obj()
                '[' -> arr()
                '"' -> str()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                else -> if (c == '-' || c.isDigit()) num() else throw IllegalArgumentException("JSON: '$c' at $pos")
            }
        }

        private fun literal(word: String, v: Any?): Any? {
            if (!s.startsWith(word, pos)) throw IllegalArgumentException("JSON: expected $word at $pos")
            pos += word.length
            return v
        }

        private fun num(): Double {
            val start = pos
            while (pos < s.length && (s[pos].isDigit() || s[pos] in "+-.eE")) pos++
            return s.substring(start, pos).toDouble()
        }

        private fun str(): String {
            val out = StringBuilder()
            pos++ // opening quote
            while (true) {
                if (pos >= s.length) throw IllegalArgumentException("JSON: unterminated string")
                val c = s[pos++]
                when (c) {
                    '"' -> return out.toString()
                    '\\' -> {
                        val e = s[pos++]
                        when (e) {
                            'n' -> out.append('\n')
                            't' -> out.append('\t')
                            'r' -> out.append('\r')
                            'b' -> out.append('\b')
                            'f' -> out.append('\u000c')
                            'u' -> {
                                out.append(s.substring(pos, pos + 4).toInt(16).toChar())
                                pos += 4
                            }
                            else -> out.append(e) // \" \\ \/
                        }
                    }
                    else -> out.append(c)
                }
            }
        }

        private fun arr(): List<Any?> {
            val out = ArrayList<Any?>()
            pos++
            skipSpace()
            if (s[pos] == ']') { pos++; return out }
            while (true) {
                out.add(value())
                skipSpace()
                val sep = s[pos++]
                if (sep == ']') return out
                if (sep != ',') throw IllegalArgumentException("JSON: expected , or ] at ${pos - 1}")
            }
        }

        private fun obj(): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            pos++
            skipSpace()
            if (s[pos] == '}') { pos++; return out }
            while (true) {
                skipSpace()
                val key = str()
                skipSpace()
                if (s[pos++] != ':') throw IllegalArgumentException("JSON: expected : at ${pos - 1}")
                out[key] = value()
                skipSpace()
                val sep = s[pos++]
                if (sep == '}') return out
                if (sep != ',') throw IllegalArgumentException("JSON: expected , or } at ${pos - 1}")
            }
        }
    }
}

/** Typed access into parsed JSON, failing with the path when the document is not what pocketsam wrote. */
@Suppress("UNCHECKED_CAST")
internal fun Any?.obj(what: String): Map<String, Any?> =
    this as? Map<String, Any?> ?: throw IllegalArgumentException("$what: expected a JSON object")

@Suppress("UNCHECKED_CAST")
internal fun Any?.list(what: String): List<Any?> =
    this as? List<Any?> ?: throw IllegalArgumentException("$what: expected a JSON array")

internal fun Any?.num(what: String): Double = this as? Double ?: throw IllegalArgumentException("$what: expected a number")

internal fun Any?.str(what: String): String = this as? String ?: throw IllegalArgumentException("$what: expected a string")

internal fun Map<String, Any?>.at(key: String): Any? =
    if (containsKey(key)) this[key] else throw IllegalArgumentException("missing key \"$key\"")
