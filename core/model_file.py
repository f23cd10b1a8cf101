"""The project's model file: one `.safetensors` holding the generator (and the sound models) with
their configs in the metadata. Loading never unpickles anything.

Layout: tensors `generator.<state_dict key>` and `sound.<state_dict key>`; metadata
`soundvj.format`, `soundvj.version`, `generator.config` (NVIDIA's Generator kwargs, JSON),
`sound.config` (JSON, when sound models are present) and a free-text `source`.
"""

from __future__ import annotations

import json
import math
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.default_model import default_generator
from core.device import pick_device
from core.atomic_write import atomic_path, temp_path_beside
from core.errors import SoundvjError, one_line, short_repr
from core.stylegan3.networks import Generator
from core.stylegan3.nvidia_pickle import read_network_pickle

FORMAT = "soundvj-model"
VERSION = 1
RESERVED_METADATA = ("soundvj.format", "soundvj.version", "generator.config", "sound.config", "source")
DEFAULT_MODEL_NAME = "default"  # the shipped trained model when one ships (SHIPPED_DEFAULT), else RANDOM_MODEL_NAME
RANDOM_MODEL_NAME = "random"  # the random-weights generator built from a seed (no file): tests, benchmarks
SHIPPED_DEFAULT = Path(__file__).resolve().parent / "assets" / "default.safetensors"


@dataclass(frozen=True)
class ModelFileContents:
    """Everything a model file holds, still on the CPU and not yet built into modules."""

    generator_config: dict
    generator_state: dict[str, torch.Tensor]
    sound_config: dict | None
    sound_state: dict[str, torch.Tensor] | None
    source: str
    metadata: dict[str, str] = field(default_factory=dict)  # the free-form keys save_model(metadata=) wrote


def check_writable_folder(path: Path) -> None:
    """Fail early, before any work, if `path` cannot be written: a folder, a missing folder, or a
    folder where no file can be created (a temp file is made and removed to find out: `os.access`
    says yes to root even on a read-only file system)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SoundvjError(f"{path}: is a directory, expected a file name to write")
    if not folder.is_dir():
        raise SoundvjError(f"{path}: the folder {folder} does not exist")
    try:
        probe = temp_path_beside(path)
    except OSError as e:
        raise SoundvjError(f"{path}: cannot write in {folder} ({one_line(e)})") from None
    probe.unlink(missing_ok=True)


def check_not_an_input(output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output that is one of the inputs (same file, also through a symlink or a hard
    link): writing it would replace what the user is rendering from. `inputs` maps what each input
    is ("audio file", "model", ...) to its path (None: not given)."""
    out = Path(output).expanduser()
    for what, given in inputs.items():
        if given is None:
            continue
        source = Path(given).expanduser()
        try:
            same = out.exists() and source.exists() and os.path.samefile(out, source)
        except OSError:
            same = False
        if same or (source.exists() and out.absolute() == source.absolute()):
            raise SoundvjError(f"{out}: is the input {what} {source}; choose another output name (it would be replaced)")


def save_model(
    path: str | os.PathLike,
    generator: Generator,
    sound_state: dict[str, torch.Tensor] | None = None,
    sound_config: dict | None = None,
    source: str = "",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a model file atomically (temp file, then rename). `metadata`: extra free-form string
    fields (e.g. a trained generator's class names), kept apart from the reserved ones."""
    from safetensors.torch import save_file

    path = Path(path)
    check_writable_folder(path)
    tensors = {f"generator.{k}": v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    metadata_out = {
        "soundvj.format": FORMAT,
        "soundvj.version": str(VERSION),
        "generator.config": json.dumps(generator.init_kwargs, sort_keys=True),
        "source": source,
    }
    for key, value in (metadata or {}).items():
        if key in RESERVED_METADATA or not isinstance(value, str):
            raise ValueError(f"save_model: metadata {key!r} is reserved or not a string")
        metadata_out[key] = value
    if sound_state is not None:
        if sound_config is None:
            raise ValueError("save_model: sound_state needs its sound_config")
        tensors.update({f"sound.{k}": v.detach().cpu().contiguous() for k, v in sound_state.items()})
        metadata_out["sound.config"] = json.dumps(sound_config, sort_keys=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata_out)
    return path


def read_model_file(path: str | os.PathLike) -> ModelFileContents:
    """Read and check a model file's header and tensors (CPU)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise SoundvjError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise SoundvjError(
            f"{path}: not a readable .safetensors model file ({one_line(e, first_line_only=True)})"
        ) from None
    if meta.get("soundvj.format") != FORMAT:
        raise SoundvjError(f"{path}: a safetensors file, but not a soundvj model (no 'soundvj.format' metadata)")
    if meta.get("soundvj.version") != str(VERSION):
        raise SoundvjError(
            f"{path}: model file version {meta.get('soundvj.version')!r} is not supported (expected {VERSION})"
        )
    gen_config = _json_field(path, meta, "generator.config")
    sound_config = _json_field(path, meta, "sound.config") if "sound.config" in meta else None
    gen_state = {k[len("generator."):]: v for k, v in tensors.items() if k.startswith("generator.")}
    sound_state = {k[len("sound."):]: v for k, v in tensors.items() if k.startswith("sound.")}
    if not gen_state:
        raise SoundvjError(f"{path}: holds no generator tensors")
    extra = {k: v for k, v in meta.items() if k not in RESERVED_METADATA}
    return ModelFileContents(gen_config, gen_state, sound_config, sound_state or None, meta.get("source", ""), extra)


def _json_field(path: Path, meta: dict, key: str) -> dict:
    try:
        value = json.loads(meta[key])
    except KeyError:
        raise SoundvjError(f"{path}: metadata field {key!r} is missing") from None
    except json.JSONDecodeError as e:
        raise SoundvjError(f"{path}: metadata field {key!r} is not valid JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise SoundvjError(f"{path}: metadata field {key!r} must be a JSON object")
    return value


# Every Generator keyword with its allowed values: (kind, low, high). Wide enough for any StyleGAN3
# NVIDIA or others have trained (T/R, 16 px to 4096 px, channel_max up to 2048), narrow enough that a
# forged config cannot ask for tens of gigabytes before the weights are even looked at.
_INT, _FLOAT, _BOOL, _OPTIONAL_FLOAT = "an integer", "a number", "true or false", "a number or null"
GENERATOR_FIELDS: dict[str, tuple[str, float, float]] = {
    "z_dim": (_INT, 1, 4096),
    "c_dim": (_INT, 0, 10000),
    "w_dim": (_INT, 1, 4096),
    "img_resolution": (_INT, 8, 4096),  # and a power of two
    "img_channels": (_INT, 1, 4),
    "channel_base": (_INT, 1, 1 << 21),
    "channel_max": (_INT, 1, 2048),
    "num_layers": (_INT, 2, 64),
    "num_critical": (_INT, 0, 63),  # and below num_layers
    "first_cutoff": (_FLOAT, 0.01, 4096),
    "first_stopband": (_FLOAT, 0.01, 4096),
    "last_stopband_rel": (_FLOAT, 0.01, 16),
    "margin_size": (_INT, 0, 256),
    "output_scale": (_FLOAT, -1e6, 1e6),
    "num_fp16_res": (_INT, 0, 16),
    "conv_kernel": (_INT, 1, 9),
    "filter_size": (_INT, 1, 32),
    "lrelu_upsampling": (_INT, 1, 8),
    "use_radial_filters": (_BOOL, 0, 1),
    "conv_clamp": (_OPTIONAL_FLOAT, 0, 1e9),
    "magnitude_ema_beta": (_FLOAT, 0, 1),
}
MAPPING_FIELDS: dict[str, tuple[str, float, float]] = {
    "num_layers": (_INT, 1, 32),
    "lr_multiplier": (_FLOAT, 0, 1e6),
    "w_avg_beta": (_FLOAT, 0, 1),
}
_REQUIRED = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def _check_fields(values: dict, fields: dict[str, tuple[str, float, float]], where: str, source: str | Path) -> None:
    for key, value in values.items():
        if key not in fields:
            raise SoundvjError(
                f"{source}: generator config does not fit StyleGAN3's Generator (unknown key {short_repr(key)} in {where})"
            )
        kind, lo, hi = fields[key]
        if kind == _BOOL:
            ok = isinstance(value, bool)
        elif kind == _INT:
            ok = type(value) is int and lo <= value <= hi
        else:
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = (value is None and kind == _OPTIONAL_FLOAT) or (number and lo <= value <= hi)
        if not ok:
            bounds = "" if kind == _BOOL else f" in [{lo:g}, {hi:g}]"
            raise SoundvjError(
                f"{source}: generator config {where}{key} = {short_repr(value)}: expected {kind}{bounds}"
            )


def check_generator_config(config: object, source: str | Path) -> dict:
    """The config's every field checked for type and range (one line naming the field) before
    anything is built from it; returns a copy."""
    if not isinstance(config, dict):
        raise SoundvjError(f"{source}: generator config must be a mapping, got {type(config).__name__}")
    config = dict(config)
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise SoundvjError(f"{source}: generator config does not fit StyleGAN3's Generator (missing {', '.join(missing)})")
    mapping = config.get("mapping_kwargs") or {}
    if not isinstance(mapping, dict):
        raise SoundvjError(f"{source}: generator config mapping_kwargs must be a mapping, got {type(mapping).__name__}")
    _check_fields({k: v for k, v in config.items() if k != "mapping_kwargs"}, GENERATOR_FIELDS, "", source)
    _check_fields(mapping, MAPPING_FIELDS, "mapping_kwargs.", source)
    resolution = config["img_resolution"]
    if resolution & (resolution - 1):
        raise SoundvjError(f"{source}: generator config img_resolution = {resolution}: expected a power of two")
    layers, critical = config.get("num_layers", 14), config.get("num_critical", 2)
    if critical >= layers:
        raise SoundvjError(
            f"{source}: generator config num_critical = {critical}: expected fewer than num_layers ({layers})"
        )
    return config


def _expected_state(config: dict, source: str | Path) -> dict[str, torch.Size]:
    """Names and shapes of the weights `config` builds, computed on the meta device (no memory)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's complaints about a config are the config's fault
            with torch.device("meta"):
                G = Generator(**config)
    except TypeError as e:
        raise SoundvjError(f"{source}: generator config does not fit StyleGAN3's Generator ({e})") from None
    except (ValueError, AssertionError, ZeroDivisionError, ArithmeticError, RuntimeWarning) as e:
        detail = one_line(e, limit=80, first_line_only=True)
        raise SoundvjError(f"{source}: generator config is invalid ({detail})") from None
    return {k: v.shape for k, v in G.state_dict().items()}


def build_generator(config: dict, state: dict[str, torch.Tensor] | None, source: str | Path) -> Generator:
    """Construct our Generator from NVIDIA kwargs and load a state dict strictly, with readable errors.

    The config is checked field by field, and the weights against the shapes it implies, before
    anything real is built: a 468-byte file cannot make us allocate 40 GB.
    """
    config = check_generator_config(config, source)
    expected = _expected_state(config, source)
    if state is not None:
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
            if unexpected:
                parts.append(f"unexpected {len(unexpected)} (e.g. {short_repr(unexpected[0])[1:-1]})")
            raise SoundvjError(f"{source}: weights do not fit the generator config: {', '.join(parts)}")
        for k, shape in expected.items():
            if tuple(state[k].shape) != tuple(shape):
                raise SoundvjError(
                    f"{source}: weight {k} has shape {list(state[k].shape)}, the config needs {list(shape)}"
                )
    try:
        G = Generator(**config)
    except (TypeError, ValueError, AssertionError, ZeroDivisionError) as e:
        detail = one_line(e, limit=80, first_line_only=True)
        raise SoundvjError(f"{source}: generator config is invalid ({detail})") from None
    if state is not None:
        G.load_state_dict(state, strict=True)
    return G.eval().requires_grad_(False)


def generator_from_pickle(path: str | os.PathLike, key: str = "G_ema") -> Generator:
    """An NVIDIA network pickle's generator, read without executing anything stored in the file."""
    net = read_network_pickle(path, key=key)
    if "synthesis.input.freqs" not in net.state_dict:
        raise SoundvjError(
            f"{path}: {key} ({net.class_name}) is not a StyleGAN3 generator (no synthesis.input.freqs)"
        )
    if net.init_args:
        raise SoundvjError(f"{path}: {key} was built with positional arguments, expected keyword arguments")
    return build_generator(net.init_kwargs, net.state_dict, path)


DEFAULT_MODEL_ENV = "SOUNDVJ_DEFAULT_MODEL"  # a model file (or "random") that "default" names instead


def builtin_model_file(name: str | os.PathLike | None) -> Path | None:
    """The file behind a built-in model name, or None for the random-weights generator.

    None and "default" name `$SOUNDVJ_DEFAULT_MODEL` when set (a model file, or "random"), else the
    shipped model (`SHIPPED_DEFAULT`) when it is there; "random" always names the random-weights one.
    Any other name is not built in (see `is_builtin_model`)."""
    if name is None or str(name) == DEFAULT_MODEL_NAME:
        chosen = os.environ.get(DEFAULT_MODEL_ENV, "").strip()
        if chosen == RANDOM_MODEL_NAME:
            return None
        if chosen:
            path = Path(chosen).expanduser()
            if not path.is_file():
                raise SoundvjError(f"{DEFAULT_MODEL_ENV}={short_env(chosen)}: no such model file (or 'random')")
            return path
        return SHIPPED_DEFAULT if SHIPPED_DEFAULT.is_file() else None
    return None


def short_env(value: str, limit: int = 120) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def is_builtin_model(name: str | os.PathLike | None) -> bool:
    return name is None or str(name) in (DEFAULT_MODEL_NAME, RANDOM_MODEL_NAME)


def load_generator(path: str | os.PathLike | None = None, device: str | torch.device | None = None) -> Generator:
    """A ready-to-run generator (eval mode, no grads) from an NVIDIA `.pkl`, a soundvj `.safetensors`,
    None / "default" for the embedded default, or "random" for the random-weights one."""
    dev = pick_device(device)
    if is_builtin_model(path):
        shipped = builtin_model_file(path)
        if shipped is None:
            return default_generator().to(dev)
        path = shipped
    path = Path(path)
    kind = model_kind(path)
    if kind == "pickle":
        G = generator_from_pickle(path)
    else:
        contents = read_model_file(path)
        G = build_generator(contents.generator_config, contents.generator_state, path)
    return G.to(dev)


def model_kind(path: Path) -> str:
    """'pickle' or 'safetensors', from the file's structure (extensions lie, and one byte decides nothing).

    A safetensors file is an 8-byte little-endian header length N, then N bytes of JSON object, then
    the tensor data. N's low byte is 0x80 (a pickle's PROTO opcode) for about 1 in 32 valid files, so
    the safetensors structure is checked first: N within the file, '{' first and '}' (or the spaces
    it is padded with) last.
    """
    if not path.exists():
        raise SoundvjError(f"{path}: no such file")
    if path.is_dir():
        raise SoundvjError(f"{path}: is a directory, expected a .pkl or .safetensors model file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
            tail = b""
            if len(head) >= 9:
                header_len = struct.unpack("<Q", head[:8])[0]
                if 2 <= header_len <= size - 8:
                    f.seek(8 + header_len - 1)
                    tail = f.read(1)
    except OSError as e:
        raise SoundvjError(f"{path}: cannot read the file ({one_line(e)})") from None
    if not head:
        raise SoundvjError(f"{path}: the file is empty")
    json_starts = head[8:9] == b"{"
    if json_starts and tail in (b"}", b" "):
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"  # PROTO opcode and a protocol pickle writes
    if path.suffix == ".pkl":
        return "pickle"  # protocol 0/1 pickles have no PROTO; the unpickler says what is wrong
    if json_starts:
        return "safetensors"  # a damaged one; read_model_file says what is wrong
    raise SoundvjError(f"{path}: not a model file (expected an NVIDIA .pkl or a soundvj .safetensors)")


def describe_generator(G: Generator) -> dict[str, Any]:
    """Facts for `soundvj info`."""
    radial, kernel = bool(G.init_kwargs.get("use_radial_filters")), G.init_kwargs.get("conv_kernel", 3)
    variant = {(False, 3): "T", (True, 1): "R"}.get((radial, kernel), f"custom (conv_kernel={kernel}, radial={radial})")
    return {
        "resolution": G.img_resolution,
        "channels": G.img_channels,
        "num_ws": G.num_ws,
        "w_dim": G.w_dim,
        "z_dim": G.z_dim,
        "c_dim": G.c_dim,
        "variant": f"StyleGAN3-{variant}",
        "channel_base": G.init_kwargs.get("channel_base", 32768),
        "channel_max": G.init_kwargs.get("channel_max", 512),
        "parameters": sum(p.numel() for p in G.parameters()),
        "device": str(next(G.parameters()).device),
    }
