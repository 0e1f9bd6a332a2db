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
