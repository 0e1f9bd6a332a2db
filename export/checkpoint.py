"""MobileSAM checkpoints: loading with a strict layout check, deterministic synthetic weights, provenance, download.

Accepted files: a `torch.save`d state dict (name -> Tensor), raw as the official `mobile_sam.pt`, or wrapped under a
top-level "model" or "state_dict" key (training-script style). Files are read with `torch.load(weights_only=True)`:
no pickled code runs. Every failure (missing file, truncated or non-torch file, wrong tensors) is one
`CheckpointError` with a one-line message naming the first offending keys.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from functools import lru_cache
from pathlib import Path

import torch

from pocketsam.runtime.errors import CheckpointError

OFFICIAL_URL = "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
LAYOUT_FILE = "mobile_sam_vit_t_layout.json"
CACHE_ENV = "POCKETSAM_CACHE"
_MAX_LISTED = 3  # keys named per category in an error message

Layout = dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, dtype name as in torch, e.g. "float32")


@lru_cache(maxsize=1)
def official_layout() -> Layout:
    """The 439 tensors of MobileSAM vit_t's state dict (name -> (shape, dtype)), from the packaged fixture."""
    text = importlib.resources.files("pocketsam.export.model").joinpath(LAYOUT_FILE).read_text()
    doc = json.loads(text)
    return {k: (tuple(v["shape"]), v["dtype"]) for k, v in doc["tensors"].items()}


def model_layout(model: torch.nn.Module) -> Layout:
    """The persistent state-dict layout of `model` (for configs other than vit_t)."""
    return {k: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for k, t in model.state_dict().items()}


def _listed(items: list[str]) -> str:
    head = ", ".join(items[:_MAX_LISTED])
    return head + (f", … (+{len(items) - _MAX_LISTED})" if len(items) > _MAX_LISTED else "")


def check_layout(state: dict[str, torch.Tensor], expected: Layout | None = None, what: str = "checkpoint") -> None:
    """Raise one `CheckpointError` unless `state` has exactly the expected keys, shapes and dtype kinds.

    Floating tensors of another float dtype (e.g. an fp16 checkpoint) are accepted: loading casts them.
    """
    expected = official_layout() if expected is None else expected
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = []
    for k, (shape, dtype) in expected.items():
        t = state.get(k)
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            wrong.append(f"{k} (a {type(t).__name__}, not a tensor)")
        elif tuple(t.shape) != shape:
            wrong.append(f"{k} {list(t.shape)} != expected {list(shape)}")
        elif t.is_floating_point() != getattr(torch, dtype).is_floating_point:
            wrong.append(f"{k} dtype {str(t.dtype).removeprefix('torch.')} != expected {dtype}")
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_listed(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_listed(unexpected)}")
        if wrong:
            parts.append(f"{len(wrong)} mismatched: {_listed(wrong)}")
        raise CheckpointError(f"{what} does not match the MobileSAM vit_t layout: " + "; ".join(parts))


def load_checkpoint(path: str | os.PathLike[str], check: bool = True) -> dict[str, torch.Tensor]:
    """Read a MobileSAM state dict from `path` (raw, or under "model"/"state_dict"), checked against the official
    vit_t layout when `check`. Raises `CheckpointError` for a missing, unreadable, truncated or mismatched file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... depending on the damage
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or not a torch file): "
                              f"{type(e).__name__}: {msg[:200]}") from None  # fmt: skip
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"checkpoint {path} is a {type(obj).__name__}, not a state dict of named tensors")
    if check:
        check_layout(obj, what=f"checkpoint {path.name}")
    return obj


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """`model.load_state_dict(state, strict=True)`, with torch's multi-line error turned into a `CheckpointError`."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        check_layout(state, model_layout(model), what=source)  # names the keys when the layout is the cause
        raise CheckpointError(f"{source} does not load into the model: {str(e).splitlines()[0]}") from None


# --- synthetic weights ------------------------------------------------------------------------------------------
# How the synthetic weights are scaled (so that random weights give masks that are neither all-on nor all-off and
# that depend on the image and the prompt):
# - every tensor draws from its own generator seeded by (seed, crc32(name)): deterministic per seed, independent of
#   dict order, and a change to one tensor's rule leaves the others untouched;
# - Conv/Linear weights ~ N(0, gain^2 / fan_in) with fan_in = inputs per output (in/groups * kh * kw; for the
#   stride-2 ConvTranspose2d of the decoder, its input channels): LeCun/He scaling keeps activations of order 1
#   through the 12 TinyViT blocks (gain sqrt(2) before GELU/ReLU, 1 otherwise); biases ~ N(0, 0.02^2);
# - BatchNorm: weight ~ U(0.8, 1.2), bias ~ N(0, 0.05^2), running mean ~ N(0, 0.05^2), running var ~ U(0.8, 1.2);
#   the last BN of each MBConv residual branch and the projection of each residual branch are damped (x0.5) so
#   the residual stream does not blow up with depth;
# - LayerNorm: weight ~ 1 + N(0, 0.1^2), bias ~ N(0, 0.1^2); the neck ends in LayerNorm2d, so embeddings have
#   per-position unit variance (order 1: an absolute tolerance of 1e-4 is meaningful);
# - TinyViT attention biases ~ N(0, 0.5^2) (a visible relative-position preference); SAM embeddings (point,
#   not-a-point, no-mask, IoU and mask tokens) and the PE Gaussian matrix ~ N(0, 1) as torch/SAM initialize them;
# - mask logits are hyper_in (Bx4x32) @ upscaled (Bx32xHW). The upscaled features end in GELU, so they have a
#   positive mean: a plain draw gives masks that are all-on or all-off whatever the image. The last
#   ConvTranspose2d bias is set to -MASK_FEATURE_SHIFT so the GELU works around its knee, and the hypernetwork
#   output layer ~ N(0, (HYPER_GAIN^2)/fan_in) with zero bias: the logits then vary in sign across the image.
SYNTHETIC_GAIN_RELU = 2.0**0.5
MASK_FEATURE_SHIFT = 0.5
HYPER_GAIN = 1.0


_LAYERNORM2D_PREFIXES = (
    "image_encoder.neck.1.",
    "image_encoder.neck.3.",
    "prompt_encoder.mask_downscaling.1.",
    "prompt_encoder.mask_downscaling.4.",
    "mask_decoder.output_upscaling.1.",
)


def _fan_in(name: str, shape: tuple[int, ...]) -> int:
    if "output_upscaling" in name and len(shape) == 4:  # ConvTranspose2d weight: (in, out, kh, kw)
        return shape[0]
    fan = shape[1] if len(shape) > 1 else shape[0]
    for d in shape[2:]:
        fan *= d
    return max(fan, 1)


def _synthetic_tensor(name: str, shape: tuple[int, ...], dtype: str, g: torch.Generator) -> torch.Tensor:
    def normal(std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=g) * std + mean

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(shape, generator=g) * (hi - lo) + lo

    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=getattr(torch, dtype))
    if leaf == "running_mean":
        return normal(0.05)
    if leaf == "running_var":
        return uniform(0.8, 1.2)
    is_bn = ".bn." in name
    if is_bn and leaf == "weight":
        damp = 0.5 if ".conv3.bn." in name and ".blocks." in name else 1.0
        return uniform(0.8, 1.2) * damp
    if is_bn and leaf == "bias":
        return normal(0.05)
    if leaf == "attention_biases":
        return normal(0.5)
    if leaf == "positional_encoding_gaussian_matrix":
        return normal(1.0)
    if any(s in name for s in ("point_embeddings", "not_a_point_embed", "no_mask_embed", "iou_token", "mask_tokens")):
        return normal(1.0)
    if len(shape) == 1:  # LayerNorm / LayerNorm2d weight and bias, Linear / Conv bias
        if name == "mask_decoder.output_upscaling.3.bias":
            return normal(0.02) - MASK_FEATURE_SHIFT
        is_norm = "norm" in name or name.startswith(_LAYERNORM2D_PREFIXES)
        if is_norm:
            return normal(0.1, 1.0) if leaf == "weight" else normal(0.1)
        if "output_hypernetworks_mlps" in name and ".layers.2." in name:
            return torch.zeros(shape)
        return normal(0.02)
    # Conv / Linear / ConvTranspose weights
    gain = 1.0
    if any(s in name for s in (".fc1.", ".lin1.", ".layers.0.", ".layers.1.", ".seq.", "mask_downscaling",
                               "output_upscaling", ".conv1.", ".conv2.")):  # fmt: skip
        gain = SYNTHETIC_GAIN_RELU  # followed by GELU/ReLU
    if "output_hypernetworks_mlps" in name and ".layers.2." in name:
        gain = HYPER_GAIN
    if any(s in name for s in (".attn.proj.", ".mlp.fc2.")):
        gain = 0.5  # residual-branch outputs of TinyViT blocks
    return normal(gain / _fan_in(name, shape) ** 0.5)


def synthetic_state_dict(seed: int = 0, config: str = "vit_t") -> dict[str, torch.Tensor]:
    """Deterministic random weights for `config` ("vit_t": all 439 tensors of the official layout and dtypes).

    Same seed, same tensors (bit for bit, on any machine: CPU generators); different seeds differ in every tensor.
    Scaled so masks on real photos are non-degenerate (see the comment above).
    """
    if config == "vit_t":
        layout = official_layout()
    else:
        from .model.sam import MODEL_BUILDERS

        if config not in MODEL_BUILDERS:
            raise ValueError(f"unknown model config {config!r}")
        layout = model_layout(MODEL_BUILDERS[config]())
    out = {}
    for name, (shape, dtype) in layout.items():
        g = torch.Generator().manual_seed((int(seed) * 0x9E3779B1 + zlib.crc32(name.encode())) % (2**63))
        out[name] = _synthetic_tensor(name, shape, dtype, g).to(getattr(torch, dtype)).contiguous()
    return out


# --- provenance -------------------------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_origin(checkpoint: str | os.PathLike[str] | None, seed: int = 0) -> dict[str, object]:
    """Where the weights came from, for manifests and reports.

    None -> {"kind": "random", "seed": N, "description": "random weights, seed N"};
    a path -> {"kind": "file", "path": absolute path, "sha256": hex, "description": "<name> (sha256 <12 hex>)"}.
    """
    if checkpoint is None:
        return {"kind": "random", "seed": int(seed), "description": f"random weights, seed {int(seed)}"}
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    digest = sha256_file(path)
    return {"kind": "file", "path": str(path.resolve()), "sha256": digest,
            "description": f"{path.name} (sha256 {digest[:12]})"}  # fmt: skip


# --- download ---------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """`$POCKETSAM_CACHE`, else `~/.cache/pocketsam`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pocketsam"


def download_checkpoint(
    dest_dir: str | os.PathLike[str] | None = None,
    url: str = OFFICIAL_URL,
    progress: bool = True,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download the official `mobile_sam.pt` (or `url`) into `dest_dir` (default `cache_dir()`) and validate it.

    The file is written to a temporary name in `dest_dir`, checked with `load_checkpoint`, then renamed into place:
    a failed or invalid download leaves nothing behind. A valid file already there is reused unless `force`.
    Raises `CheckpointError` (one line) on a network error or a file that is not a vit_t checkpoint.
    """
    dest = Path(dest_dir).expanduser() if dest_dir is not None else cache_dir()
    name = Path(urllib.parse.urlparse(url).path).name or "mobile_sam.pt"
    final = dest / name
    if final.is_file() and not force:
        load_checkpoint(final)
        return final
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                bar = None
                if progress:
                    from tqdm import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name)
                try:
                    while block := resp.read(1 << 20):
                        out.write(block)
                        if bar is not None:
                            bar.update(len(block))
                finally:
                    if bar is not None:
                        bar.close()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            code = f"HTTP {e.code} " if isinstance(e, urllib.error.HTTPError) else ""
            raise CheckpointError(f"could not download {url}: {code}{reason}") from None
        try:
            load_checkpoint(tmp)
        except CheckpointError as e:
            raise CheckpointError(f"downloaded file from {url} is not a MobileSAM vit_t checkpoint: {e}") from None
        os.replace(tmp, final)
        return final
    finally:
        tmp.unlink(missing_ok=True)
