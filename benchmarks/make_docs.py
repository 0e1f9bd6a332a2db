"""Regenerate docs/benchmarks.md (and its JSON and plot) with one command:

    python -m pocketsam.benchmarks.make_docs            # measures here: ~5 min on 2 busy cores

It exports the ONNX bundles it needs when they are missing or were made with other graphs
(bundles/onnx-{fp32,int8-dynamic,int8-static}, and onnx-fp32-reference: the upstream-shaped encoder and decoder, so
the rewritten graphs' gain is measured in the same run), times them against the PyTorch reference with the local target, and
writes docs/benchmarks.{md,json,png}.
`--from-json docs/benchmarks.json` rewrites the page from earlier measurements without timing anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# bundle folder name -> (precision of both parts, graph of both parts: graphs.ENCODER_GRAPHS / DECODER_GRAPHS)
BUNDLES = {
    "onnx-fp32": ("fp32", "fast"),
    "onnx-int8-dynamic": ("int8-dynamic", "fast"),
    "onnx-int8-static": ("int8-static", "fast"),
    "onnx-fp32-reference": ("fp32", "reference"),
}
PARTS = ("encoder", "decoder", "prompt")

HOWTO = """
## How the table is made

```sh
python -m pocketsam.benchmarks.make_docs        # exports missing bundles, measures, rewrites this page
# which runs, in effect:
pocketsam bench bundles/onnx-fp32 bundles/onnx-int8-dynamic bundles/onnx-int8-static bundles/onnx-fp32-reference \\
    --parts encoder,decoder,prompt --threads {threads} --warmup {warmup} --runs {runs} --reference torch \\
    --json docs/benchmarks.json --plot docs/benchmarks.png
```

Parts: `encoder` (one 1×3×1024×1024 encoder run), `decoder` (one decoder run, one click + SAM's pad point),
`prompt` (what a click costs an app with a cached embedding: decoder + upsampling and cropping to the original
size; the reference is what segment-anything's `SamPredictor.predict` pays in PyTorch), `e2e` (`set_image` + one
click). Bundles here carry synthetic seeded weights (no network): the timings are those of the real architecture,
the int8 parity figures are measured on random weights (see `runtime/parity.py`).

Memory column (local target): `+A / P` = A MiB of RSS added when the contender was opened / P MiB, the process's peak
RSS while this row's calls ran (Linux VmHWM, reset before every call). One process holds every contender, so P is
not a per-model footprint; A is the closest per-model figure a single process can give honestly.

## Running it elsewhere

Every run writes JSON rows (schema: `benchmarks/schema.py`); `pocketsam bench-merge` joins devices into one table
and one plot:

```sh
pocketsam bench-merge docs/benchmarks.json pi5.json jetson.json pixel8.json \\
    --markdown all.md --plot all.png          # `pocketsam bench merge …` is the same command
```

### Raspberry Pi (torch-free runtime)

```sh
pip install 'pocketsam[onnx,bench]'   # or pocketsam[tflite,bench]; no torch
pocketsam bench bundles/onnx-fp32 bundles/onnx-int8-dynamic --reference probe --threads 4 \\
    --parts encoder,decoder,prompt,e2e --json pi5.json
```

`--reference probe`: parity against the PyTorch outputs recorded in each bundle's `probe.npz`; the speed-up column
stays empty (no reference was timed on that device, and none is invented). `--reference torch` on a device without
torch stops with a message saying so.

### Jetson

Same command as the Pi with `onnxruntime-gpu` from NVIDIA's Jetson wheels installed: ONNX bundles then run on
TensorRT, else CUDA, else CPU; each row's `delegate` is the providers the session really holds, in order (a
provider whose libraries do not load is dropped by onnxruntime, with a warning). `--providers cuda,cpu` picks them
by hand; `--trt-fp16`, `--trt-cache DIR` and `--trt-fp32-ops OPS` set TensorRT's options (docs/edge.md). The first
TensorRT session builds its engine: that lands in `init s`, not in the timings. From this machine,
`--target ssh://user@board` runs the same bench on the board and brings its rows back (docs/edge.md).

### Android phone

```sh
pocketsam bench bundles/tflite-fp32 bundles/onnx-fp32 --target android --serial R58M12345 \\
    --benchmark-model ./android_aarch64_benchmark_model --perf-test ./onnxruntime_perf_test \\
    --delegates cpu,gpu,nnapi --nnapi-accelerator qti-dsp --threads 4 --runs 50 --json pixel8.json
```

The bundle's model files and the tools are pushed to `/data/local/tmp/pocketsam`; TFLite's `benchmark_model` times
`.tflite` parts (XNNPACK with `--num_threads`, `--use_gpu`, `--use_nnapi` with `--nnapi_accelerator_name`) and ONNX
Runtime's `onnxruntime_perf_test` times `.onnx` parts (`-e cpu|xnnpack|nnapi`, inputs generated with `-I`). Their
printed timings and memory become the same rows: benchmark_model reports mean/min/max (and median when it prints
it) but no p90, so that cell stays empty; its memory is the tool's own footprint delta. Encoder and decoder parts
only (prompt and e2e need the Python runtime on the device). Parity is not measured on the phone: run `pocketsam
verify` with the same engine.

### Mac (CoreML compute units)

```sh
pocketsam bench bundles/coreml-fp16 --target apple --compute-units CPU_ONLY,CPU_AND_GPU,CPU_AND_NE,ALL \\
    --reference torch --json m3.json
```

One contender per compute unit, interleaved with the PyTorch reference. Elsewhere than macOS the apple target
stops with a message (CoreML prediction only runs on macOS).
"""


def _ensure_bundles(root: Path) -> list[Path]:
    paths = []
    for name, (p, graph) in BUNDLES.items():
        out = root / name
        manifest = out / "manifest.json"
        made = json.loads(manifest.read_text()) if manifest.exists() else {}
        if made.get("decoder_graph") != graph or made.get("encoder_graph") != graph:
            subprocess.run([sys.executable, "-m", "pocketsam.cli", "export", "--format", "onnx",
                            "--encoder-precision", p, "--decoder-precision", p, "--decoder-graph", graph,
                            "--encoder-graph", graph, "--out", str(out), "--overwrite", "--quiet"], check=True)
        paths.append(out)
    return paths


def _load_warning(rows: list[dict]) -> str:
    r = rows[0]
    load, cores = r.get("load"), r.get("cores")
    if not load or not cores or load[0] <= cores:
        return ""
    return (f" **The machine was oversubscribed during this run (load {load[0]:.1f} on {cores} cores):** absolute "
            "times are inflated several-fold against a quiet machine; the speed-ups, measured interleaved in the "
            "same run, are the result to read.")


def page(rows: list[dict], runs: int, warmup: int, threads: int | None) -> str:
    from .report import method_note, to_markdown

    return (
        "# Benchmarks\n\n"
        "<!-- generated by `python -m pocketsam.benchmarks.make_docs`; edit benchmarks/make_docs.py, not this file -->\n\n"
        "## Method\n\n" + method_note(rows, runs, warmup) +
        "\nThis machine is shared (other engineers' jobs run beside the benchmark): the load average above is the "
        "one the run started under. Interleaving gives every contender the same noise; read ratios and medians, "
        "not single runs." + _load_warning(rows) + "\n\n"
        "## Results (this machine)\n\n![median latency per part](benchmarks.png)\n\n" + to_markdown(rows) +
        HOWTO.format(threads=threads, warmup=warmup, runs=runs)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundles", type=Path, default=Path("bundles"))
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--from-json", type=Path, help="rewrite the page from these rows instead of measuring")
    args = ap.parse_args(argv)

    from .plot import plot_rows
    from .report import read_json, short_table, write_json

    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        rows = read_json([args.from_json])
    else:
        from pocketsam.export.calibration import sample_photo

        from .local import bench_local

        rows = bench_local(_ensure_bundles(args.bundles), sample_photo("chelsea"), PARTS, args.threads,
                           args.warmup, args.runs, reference="torch")
        write_json(rows, args.out / "benchmarks.json")
    plot_rows(rows, args.out / "benchmarks.png")
    (args.out / "benchmarks.md").write_text(page(rows, args.runs, args.warmup, args.threads))
    print(short_table(rows))
    print(f"wrote {args.out / 'benchmarks.md'}, {args.out / 'benchmarks.json'}, {args.out / 'benchmarks.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
