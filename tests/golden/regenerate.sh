#!/usr/bin/env bash
# Regenerates pocketsam's golden files with the UPSTREAM implementation (MobileSAM's `mobile_sam` SamPredictor,
# which is segment-anything's), on pocketsam's synthetic seed-0 vit_t weights. Makes, in tests/golden/:
#   images/*.png   the photos (lossless)
#   golden.json    sizes, resize sha256, coordinate/box transforms, prompts, scores, versions (small, JSON)
#   <image>.npz    embedding, masks (packbits), low-res logits (float16 where README.md says so)
#   contract.json  pocketsam.runtime.spec's constants and graph I/O (spec.write_contract) for the Kotlin/Swift demos
#   amg.json.gz    upstream SamAutomaticMaskGenerator's records (make_golden_amg.py; tests/test_mask_generator.py)
# CI never runs this: tests/test_golden.py only reads the committed files. Run it by hand when the synthetic
# weights, the photos or the prompts change (the test says so when the weights' digest no longer matches), then
# commit the result.
#
# usage: tests/golden/regenerate.sh            (from anywhere; paths are relative to the repository root)
#   POCKETSAM_REFERENCE_ENV=DIR   the side env with mobile_sam + segment_anything (default .reference-env; it is
#                                 built by ../shared/tools/make-reference-env.sh if it does not work yet)
#   PYTHON=...                    the python that has pocketsam installed (default python3)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
env_dir=${POCKETSAM_REFERENCE_ENV:-.reference-env}
python=${PYTHON:-python3}

# 1. the side env (reused when it already imports mobile_sam and segment_anything)
../shared/tools/make-reference-env.sh "$env_dir"

# 2. our synthetic checkpoint, written by pocketsam with the system python
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ckpt="$tmp/synthetic_seed0_vit_t.pt"
"$python" -c '
import sys, torch
from pocketsam.export.checkpoint import synthetic_state_dict
torch.save(synthetic_state_dict(seed=0, config="vit_t"), sys.argv[1])
' "$ckpt"

# 3. upstream runs the photos and prompts (side env only)
rm -f tests/golden/*.npz tests/golden/images/*.png
"$env_dir/bin/python" tests/golden/make_golden.py --checkpoint "$ckpt" --out tests/golden

# 3b. upstream's automatic mask generator on two of those photos (amg.json.gz, ~20 min on 2 cores): its COCO RLE
#     output needs pycocotools, its min_mask_region_area OpenCV (side env only; pocketsam needs neither)
"$env_dir/bin/pip" install -q pycocotools opencv-python-headless
"$env_dir/bin/python" tests/golden/make_golden_amg.py --checkpoint "$ckpt" --out tests/golden

# 4. the demos' copy of the spec
"$python" -c '
import sys
from pocketsam.runtime import spec
spec.write_contract(sys.argv[1])
' tests/golden/contract.json

du -ah tests/golden | sort -k2
