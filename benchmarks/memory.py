"""Peak RSS of one contender alone: a fresh Python process opens only that contender and runs the benchmark's own
cases for the requested parts, and reports its high-water mark (Linux VmHWM).

Time is measured interleaved in one process, so every contender sees the same machine; memory cannot be, because
one process holding every contender mixes their allocations (onnxruntime sessions even share one arena). So each
contender's memory is measured the way a user meets it, in a process of its own, through the very same cases
(`local._cases`: the same photo, clicks and parts). `python -m pocketsam.benchmarks.memory RECIPE.json` is that
process; `alone_peak_mb` starts it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .harness import _status_kb

# Timed-call rounds the measuring process runs: the first round reaches the peak (every arena grows in it); two
# more show it is steady. (The benchmark's own warm-up and run counts are for time, not memory.)
MEMORY_ROUNDS = 3


def alone_peak_mb(recipe: dict[str, Any], image: np.ndarray, parts: tuple[str, ...],
                  timeout_s: float = 1800) -> float | None:
    """Peak RSS in MiB of a fresh process that opens the contender `recipe` describes and runs `parts` on `image`
    (`MEMORY_ROUNDS` rounds); None where VmHWM does not exist (not Linux). A failure is an error with its stderr."""
    if _status_kb("VmHWM") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="pocketsam-mem-") as tmp:
        np.save(Path(tmp) / "image.npy", image)
        spec = {**recipe, "image": str(Path(tmp) / "image.npy"), "parts": list(parts)}
        (Path(tmp) / "recipe.json").write_text(json.dumps(spec))
        out = subprocess.run([sys.executable, "-m", "pocketsam.benchmarks.memory", str(Path(tmp) / "recipe.json")],
                             capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring {recipe.get('name')} alone failed: {tail}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])


def _measure(spec: dict[str, Any]) -> dict[str, float]:
    from .local import _cases, bundle_contender, reference_contender

    image = np.load(spec["image"])
    if spec["kind"] == "bundle":
        contender = bundle_contender(Path(spec["bundle"]), spec.get("threads"), spec.get("backend"),
                                     **spec.get("options", {}))
    else:
        from pocketsam.runtime.bundle import load_bundle

        contender = reference_contender(load_bundle(spec["bundle"]) if spec.get("bundle") else None,
                                        spec.get("threads"))
    cases = _cases(contender, image, tuple(spec["parts"]))
    for _ in range(MEMORY_ROUNDS):
        for fn in cases.values():
            fn()
    return {"peak_mb": _status_kb("VmHWM") / 1024}


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.simplefilter("ignore")  # "random weights, seed 0" and the like: the parent reports, not this process
    (path,) = argv if argv is not None else sys.argv[1:]
    print(json.dumps(_measure(json.loads(Path(path).read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
