"""Upstream's `SamAutomaticMaskGenerator` (mobile_sam, eager torch) as a worker of everything_vs_upstream.py.

Runs in the reference environment (torch + torchvision + mobile_sam; no pocketsam), by path:
    python _upstream_amg_worker.py CHECKPOINT IMAGE.npy PARAMS.json THREADS
then answers one JSON line per line it reads on stdin: "run" -> {"seconds", "masks"}; "quit" -> writes the last
run's records (uncompressed RLE) to PARAMS.json's sibling `upstream-records.json` and answers {"peak_mb"}.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path


def main() -> None:
    checkpoint, image_path, params_path, threads = sys.argv[1:5]
    warnings.simplefilter("ignore")
    import numpy as np
    import torch
    from mobile_sam import SamAutomaticMaskGenerator, sam_model_registry

    torch.set_num_threads(int(threads))
    sam = sam_model_registry["vit_t"](checkpoint=checkpoint)
    sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
    sam.eval()
    image = np.load(image_path)
    params = {**json.loads(Path(params_path).read_text()), "output_mode": "uncompressed_rle"}
    generator = SamAutomaticMaskGenerator(sam, **params)
    records: list = []
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "run":
            t0 = time.perf_counter()
            records = generator.generate(image)
            print(json.dumps({"seconds": time.perf_counter() - t0, "masks": len(records)}), flush=True)
        elif line.strip() == "quit":
            out = Path(params_path).with_name("upstream-records.json")
            out.write_text(json.dumps([r["segmentation"] for r in records]))
            peak = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")) / 1024
            print(json.dumps({"peak_mb": peak}), flush=True)
            return


if __name__ == "__main__":
    main()
