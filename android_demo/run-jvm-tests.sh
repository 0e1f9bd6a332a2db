#!/usr/bin/env bash
# Compile the demo's pure-Kotlin core (android_demo/core) and run its JUnit 4 tests on the JVM, against the
# golden files in tests/golden/. Needs Debian's kotlin and junit4 packages (apt-get install kotlin junit4).
# POCKETSAM_MASK_IOU: the mask IoU bound (pytest passes the parity table's; else it is read from it here).
# POCKETSAM_DOWNSCALE=PNG:SHA256: an image larger than 1024 and the sha256 of PIL's resize of it (pytest makes one).
# POCKETSAM_BUNDLE=DIR: a bundle `pocketsam export` wrote, for the bundle reader (pytest exports a small one).
# POCKETSAM_BENCH_OUT=FILE: where the benchmark test writes its rows (pytest feeds them to `pocketsam bench-merge`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
junit="${JUNIT_JAR:-/usr/share/java/junit4.jar}"
hamcrest="${HAMCREST_JAR:-/usr/share/java/hamcrest-core.jar}"
command -v kotlinc >/dev/null || { echo "kotlinc not found: apt-get install kotlin" >&2; exit 3; }
[ -f "$junit" ] || { echo "$junit not found: apt-get install junit4" >&2; exit 3; }
bound="${POCKETSAM_MASK_IOU:-$(cd "$repo" && python3 -c 'from pocketsam.runtime.parity import checks_for
print(next(c.bound for c in checks_for("e2e", "fp32") if c.metric == "mask_iou"))')}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
kotlinc -nowarn "$here/core/src/main/kotlin" "$here/core/src/test/kotlin" -cp "$junit" -d "$out/classes" 2>&1 \
    | grep -v "warning: Options -Xverify:none" || true
[ -d "$out/classes/org/pocketsam/core" ] || { echo "compilation failed" >&2; exit 1; }
kotlin_lib="$(dirname "$(readlink -f "$(command -v kotlinc)")")/../lib"
runtime="$(ls "$kotlin_lib"/kotlin-stdlib.jar 2>/dev/null || ls /usr/share/java/kotlin-stdlib.jar)"
extra=()
[ -n "${POCKETSAM_DOWNSCALE:-}" ] && extra+=("-Dpocketsam.downscale=$POCKETSAM_DOWNSCALE")
[ -n "${POCKETSAM_BUNDLE:-}" ] && extra+=("-Dpocketsam.bundle=$POCKETSAM_BUNDLE")
[ -n "${POCKETSAM_BENCH_OUT:-}" ] && extra+=("-Dpocketsam.benchOut=$POCKETSAM_BENCH_OUT")
# Every test class: each file of core/src/test/kotlin with a @Test holds one class named after the file.
mapfile -t classes < <(grep -rl --include='*.kt' '@Test' "$here/core/src/test/kotlin" | sort \
    | sed -e "s#^$here/core/src/test/kotlin/##" -e 's#\.kt$##' -e 's#/#.#g')
java -Dpocketsam.golden="$repo/tests/golden" -Dpocketsam.maskIou="$bound" "${extra[@]}" \
    -cp "$out/classes:$junit:$hamcrest:$runtime" org.junit.runner.JUnitCore "${classes[@]}"
