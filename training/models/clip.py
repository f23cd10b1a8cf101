"""CLIP for training: an open_clip model built from the config or read from a local checkpoint.

Nothing is downloaded. Two kinds of model:

* `architecture: small` - an open_clip `CLIP` (ViT image tower, transformer text tower) whose sizes are
  the config's keys. `soundvj train clip` trains one contrastively on a dataset's frames and class
  captions and writes it with `save_clip` as a `.safetensors` file that names its own sizes in the
  metadata, so a later stage needs only the path.
* a `soundvj train clip` run folder or its `checkpoint.pt`: the CLIP it trained, sizes included.
* any architecture name open_clip ships a config for (`ViT-B-32`, the paper's CLIP) with
  `checkpoint` a local state dict (`.pt`, `.bin`, `.safetensors`), e.g. the OpenAI weights converted to
  a state dict. Only models that use open_clip's bundled BPE tokenizer are supported (no hub download).

A missing file, a file that is not a CLIP state dict, or one whose tensors do not fit the architecture is
a one-line `SoundvjError`.

Images reach CLIP through `clip_pixels`: generator images in [-1, 1] are mapped to [0, 1], resized
(bilinear, antialiased, differentiable) so the shorter side is CLIP's input size, centre-cropped, and
normalised with CLIP's mean and std. Real frames (training `train clip`, evaluation) take the same path,
so CLIP sees generated and real images alike.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from core.atomic_write import atomic_path
from core.errors import SoundvjError, one_line
from core.model_file import check_writable_folder
from training.loop import CHECKPOINT_FORMAT, CHECKPOINT_NAME
from training.stages import CLIP_STAGE

CLIP_FORMAT = "soundvj-clip"
CLIP_FORMAT_VERSION = "1"
SMALL = "small"
# CLIP's (OpenAI's) image normalisation; open_clip's models all use it unless configured otherwise.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Keys of ClipConfig that fix a small model's tensors (saved in its file, compared on load).
ARCHITECTURE_KEYS = (
    "embed_dim",
    "image_size",
    "patch_size",
    "vision_width",
    "vision_layers",
    "vision_head_width",
    "text_width",
    "text_layers",
    "text_heads",
    "context_length",
)


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SoundvjError(f"clip.{name}: expected an integer in [{lo}, {hi}], got {value!r}")


@dataclass(frozen=True)
class ClipConfig:
    """Which CLIP to use. The defaults are a small model trainable on 2 CPU cores (`soundvj train clip`)."""

    architecture: str = SMALL  # "small" (sizes below) or an open_clip name such as "ViT-B-32"
    checkpoint: str = ""  # local path; "" = random init (only `train clip` starts from nothing)
    embed_dim: int = 512  # must equal the audio encoder's embed_dim
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 4
    vision_head_width: int = 32
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 4
    context_length: int = 32  # class captions are short; OpenAI's CLIP uses 77
    caption_template: str = "a picture of {label}"

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, str) or not self.architecture:
            raise SoundvjError(f"clip.architecture: expected '{SMALL}' or an open_clip model name, got {self.architecture!r}")
        if not isinstance(self.checkpoint, str):
            raise SoundvjError(f"clip.checkpoint: expected a file path (or empty), got {self.checkpoint!r}")
        _check_int("embed_dim", self.embed_dim, 1, 4096)
        _check_int("image_size", self.image_size, 8, 1024)
        _check_int("patch_size", self.patch_size, 1, 128)
        _check_int("vision_width", self.vision_width, 8, 4096)
        _check_int("vision_layers", self.vision_layers, 1, 64)
        _check_int("vision_head_width", self.vision_head_width, 1, 4096)
        _check_int("text_width", self.text_width, 8, 4096)
        _check_int("text_layers", self.text_layers, 1, 64)
        _check_int("text_heads", self.text_heads, 1, 64)
        _check_int("context_length", self.context_length, 4, 77)
        if self.image_size % self.patch_size:
            raise SoundvjError(
                f"clip.image_size: expected a multiple of clip.patch_size ({self.patch_size}), got {self.image_size}"
            )
        if self.vision_width % self.vision_head_width:
            raise SoundvjError(
                f"clip.vision_width: expected a multiple of clip.vision_head_width ({self.vision_head_width}), "
                f"got {self.vision_width}"
            )
        if self.text_width % self.text_heads:
            raise SoundvjError(
                f"clip.text_width: expected a multiple of clip.text_heads ({self.text_heads}), got {self.text_width}"
            )
        if not isinstance(self.caption_template, str) or "{label}" not in self.caption_template:
            raise SoundvjError(f"clip.caption_template: expected text containing {{label}}, got {self.caption_template!r}")

    def architecture_dict(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in ARCHITECTURE_KEYS}


def caption(label: str, template: str) -> str:
    """The text CLIP reads for a class label: folder names like `low_hum` become `low hum`."""
    return template.format(label=label.replace("_", " ").replace("-", " ").strip())


def clip_pixels(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Images [B, 3, H, W] in [-1, 1] -> CLIP's input [B, 3, S, S]: resize, centre crop, normalise.

    Differentiable, so the inversion encoder and the stepper learn through CLIP and the generator.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"clip_pixels: expected images [B, 3, H, W], got {list(images.shape)}")
    x = (images.float() + 1.0) * 0.5
    h, w = x.shape[2:]
    if (h, w) != (image_size, image_size):
        scale = image_size / min(h, w)
        size = (max(image_size, round(h * scale)), max(image_size, round(w * scale)))
        # Antialiasing matters when shrinking: a 256-px frame read by a 64-px CLIP would alias otherwise.
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=size[0] < h)
        top, left = (size[0] - image_size) // 2, (size[1] - image_size) // 2
        x = x[:, :, top : top + image_size, left : left + image_size]
    mean = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class ClipModel(torch.nn.Module):
    """An open_clip model plus its tokenizer; encodes generator-range images, captions and labels."""

    def __init__(self, model: torch.nn.Module, config: ClipConfig, source: str):
        super().__init__()
        from open_clip.tokenizer import SimpleTokenizer

        self.model = model
        self.config = config
        self.source = source
        self.context_length = int(model.context_length)
        self.tokenizer = SimpleTokenizer(context_length=self.context_length)
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    @property
    def logit_scale(self) -> torch.nn.Parameter:
        return self.model.logit_scale

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] -> unit-norm embeddings [B, embed_dim]."""
        pixels = clip_pixels(images, self.image_size).to(self.model.logit_scale.dtype)
        return self.model.encode_image(pixels, normalize=True)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts)).to(self.model.logit_scale.device)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Texts -> unit-norm embeddings [N, embed_dim]."""
        return self.model.encode_text(self.tokenize(texts), normalize=True)

    def encode_labels(self, labels: list[str]) -> torch.Tensor:
        """Class labels -> unit-norm embeddings of their captions [N, embed_dim]."""
        return self.encode_texts([caption(label, self.config.caption_template) for label in labels])

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image embeddings, text embeddings, exp(logit_scale)) in one call (what `train clip` optimises;
        one forward, so DistributedDataParallel can wrap the model)."""
        texts = self.model.encode_text(tokens, normalize=True)
        scale = self.model.logit_scale.clamp(max=math.log(100.0)).exp()
        return self.encode_images(images), texts, scale

    def freeze(self) -> ClipModel:
        """Eval mode, no gradients to its weights (gradients still flow through it to the images)."""
        self.eval()
        self.requires_grad_(False)
        return self


def _build_small(config: ClipConfig) -> torch.nn.Module:
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(
        layers=config.vision_layers,
        width=config.vision_width,
        head_width=config.vision_head_width,
        patch_size=config.patch_size,
        image_size=config.image_size,
    )
    text = CLIPTextCfg(
        context_length=config.context_length,
        width=config.text_width,
        heads=config.text_heads,
        layers=config.text_layers,
    )
    return CLIP(config.embed_dim, vision, text)


def _build_named(config: ClipConfig) -> torch.nn.Module:
    import open_clip

    model_cfg = open_clip.get_model_config(config.architecture)
    if model_cfg is None:
        raise SoundvjError(
            f"clip.architecture: {config.architecture!r} is neither '{SMALL}' nor an open_clip model name "
            "(see open_clip.list_models())"
        )
    text_cfg = model_cfg.get("text_cfg", {})
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise SoundvjError(
            f"clip.architecture: {config.architecture!r} needs a Hugging Face text model or tokenizer, "
            "which cannot be fetched here; use a model with open_clip's own tokenizer (e.g. ViT-B-32)"
        )
    try:
        return open_clip.create_model(config.architecture, pretrained=None, load_weights=False, device="cpu")
    except Exception as e:  # open_clip may try a download for some towers; say which model, not a traceback
        raise SoundvjError(f"clip.architecture: cannot build {config.architecture!r} offline ({e})") from None


def _from_training_checkpoint(path: Path, payload: dict) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A `soundvj train clip` checkpoint: the trained CLIP's tensors and, as metadata, its sizes."""
    if payload.get("stage_name") != CLIP_STAGE or "clip" not in payload.get("modules", {}):
        raise SoundvjError(
            f"{path}: a checkpoint of `train {payload.get('stage_name')}`, expected one of `train clip`"
        )
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in payload["modules"]["clip"].items() if k.startswith(prefix)}
    saved = payload.get("config", {}).get("stage", {}).get("clip", {})
    try:
        meta = {
            "soundvj.format": CLIP_FORMAT,
            "clip.architecture": json.dumps({k: saved[k] for k in ARCHITECTURE_KEYS}),
            "clip.caption_template": saved["caption_template"],
        }
    except (KeyError, TypeError):
        raise SoundvjError(f"{path}: the `train clip` checkpoint does not say the CLIP's sizes (config.stage.clip)") from None
    if saved.get("architecture", SMALL) != SMALL:
        meta = {}  # a fine-tuned named architecture: its sizes are the name's
    return state, meta


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata naming a small CLIP's sizes, or {}) from a local file; never unpickles code.

    `path` may be a `.safetensors` file, a torch state dict, or a `train clip` checkpoint / run folder.
    """
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            reason = one_line(e, first_line_only=True)
            raise SoundvjError(f"{path}: not a readable .safetensors CLIP checkpoint ({reason})") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)  # weights_only: no code from the file
    except Exception as e:
        raise SoundvjError(f"{path}: not a readable CLIP checkpoint ({one_line(e, first_line_only=True)})") from None
    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        return _from_training_checkpoint(path, data)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise SoundvjError(f"{path}: expected a CLIP state dict (names -> tensors)")
    if all(k.startswith("module.") for k in data):  # saved from DataParallel / DDP
        data = {k[len("module."):]: v for k, v in data.items()}
    return data, {}


def _config_from_file(path: Path, config: ClipConfig, meta: dict[str, str]) -> ClipConfig:
    """A soundvj CLIP file names its sizes; they replace the config's (the file is the truth)."""
    if meta.get("soundvj.format") != CLIP_FORMAT:
        return config
    if config.architecture != SMALL:
        raise SoundvjError(
            f"{path}: a soundvj small CLIP, but clip.architecture is {config.architecture!r} (expected '{SMALL}')"
        )
    try:
        sizes = json.loads(meta.get("clip.architecture", ""))
        caption_template = meta.get("clip.caption_template", config.caption_template)
        return dataclasses.replace(config, caption_template=caption_template, **{k: sizes[k] for k in ARCHITECTURE_KEYS})
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        reason = one_line(e, first_line_only=True)
        raise SoundvjError(f"{path}: metadata 'clip.architecture' is damaged ({reason})") from None


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, architecture: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: {list(state[k].shape)}, expected {list(expected[k].shape)})")
        raise SoundvjError(f"{path}: not a CLIP of architecture {architecture!r}: tensors {', '.join(parts)}")
    model.load_state_dict(state, strict=True)


def build_clip(config: ClipConfig, require_checkpoint: bool = True) -> ClipModel:
    """The CLIP the config names, on the CPU in train mode; the caller freezes or trains it.

    `require_checkpoint`: the audio-encoder, inverter and stepper stages need trained weights, so an
    empty `clip.checkpoint` is an error there; `train clip` starts from random weights.
    """
    if not config.checkpoint:
        if require_checkpoint:
            raise SoundvjError(
                "clip.checkpoint: expected a CLIP checkpoint path (train one with `soundvj train clip`)"
            )
        model = _build_small(config) if config.architecture == SMALL else _build_named(config)
        return ClipModel(model, config, f"untrained {config.architecture} CLIP")
    path = Path(config.checkpoint)
    if not (path.is_file() or (path / CHECKPOINT_NAME).is_file()):
        raise SoundvjError(f"clip.checkpoint: {path}: no such file (nor a run folder holding checkpoint.pt)")
    state, meta = _read_state(path)
    config = _config_from_file(path, config, meta)
    model = _build_small(config) if config.architecture == SMALL else _build_named(config)
    _load_into(model, state, path, config.architecture)
    return ClipModel(model, config, str(path))


def save_clip(path: str | os.PathLike, clip: ClipModel) -> Path:
    """Write a small CLIP as `.safetensors` with its sizes in the metadata (temp file, fsync, rename)."""
    from safetensors.torch import save_file

    if clip.config.architecture != SMALL:
        raise SoundvjError(f"save_clip: only '{SMALL}' CLIPs are written by soundvj, got {clip.config.architecture!r}")
    path = Path(path)
    check_writable_folder(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in clip.model.state_dict().items()}
    metadata = {
        "soundvj.format": CLIP_FORMAT,
        "soundvj.version": CLIP_FORMAT_VERSION,
        "clip.architecture": json.dumps(clip.config.architecture_dict(), sort_keys=True),
        "clip.caption_template": clip.config.caption_template,
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path
