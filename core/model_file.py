"""The project's model file: one `.safetensors` holding the generator (and the sound models) with
their configs in the metadata. Loading never unpickles anything.

Layout: tensors `generator.<state_dict key>` and `sound.<state_dict key>`; metadata
`soundvj.format`, `soundvj.version`, `generator.config` (NVIDIA's Generator kwargs, JSON),
`sound.config` (JSON, when sound models are present) and a free-text `source`.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.device import pick_device
from core.errors import SoundvjError
from core.stylegan3.networks import Generator

FORMAT = "soundvj-model"
VERSION = 1
DEFAULT_MODEL_NAME = "default"  # the embedded default generator, built from a seed (no file)


@dataclass(frozen=True)
class ModelFileContents:
    """Everything a model file holds, still on the CPU and not yet built into modules."""

    generator_config: dict
    generator_state: dict[str, torch.Tensor]
    sound_config: dict | None
    sound_state: dict[str, torch.Tensor] | None
    source: str


def atomic_write_path(final: Path) -> Path:
    """A temp path beside `final` (same file system, so `os.replace` is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    return Path(tmp)


def check_writable_folder(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SoundvjError(f"{path}: is a directory, expected a file name to write")
    if not folder.is_dir():
        raise SoundvjError(f"{path}: the folder {folder} does not exist")
    try:
        probe = atomic_write_path(path)
    except OSError as e:
        raise SoundvjError(f"{path}: cannot write in {folder} ({e.strerror or e})") from None
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
) -> Path:
    """Write a model file atomically (temp file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    check_writable_folder(path)
    tensors = {f"generator.{k}": v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    metadata = {
        "soundvj.format": FORMAT,
        "soundvj.version": str(VERSION),
        "generator.config": json.dumps(generator.init_kwargs, sort_keys=True),
        "source": source,
    }
    if sound_state is not None:
        if sound_config is None:
            raise ValueError("save_model: sound_state needs its sound_config")
        tensors.update({f"sound.{k}": v.detach().cpu().contiguous() for k, v in sound_state.items()})
        metadata["sound.config"] = json.dumps(sound_config, sort_keys=True)
    tmp = atomic_write_path(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SoundvjError(f"{path}: not a readable .safetensors model file ({first})") from None
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
    return ModelFileContents(gen_config, gen_state, sound_config, sound_state or None, meta.get("source", ""))


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


def build_generator(config: dict, state: dict[str, torch.Tensor] | None, source: str | Path) -> Generator:
    """Construct our Generator from NVIDIA kwargs and load a state dict strictly, with readable errors."""
    config = dict(config)
    try:
        G = Generator(**config)
    except TypeError as e:
        raise SoundvjError(f"{source}: generator config does not fit StyleGAN3's Generator ({e})") from None
    except (ValueError, AssertionError, ZeroDivisionError) as e:
        raise SoundvjError(f"{source}: generator config is invalid ({e or type(e).__name__})") from None
    if state is not None:
        expected = G.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
            if unexpected:
                parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
            raise SoundvjError(f"{source}: weights do not fit the generator config: {', '.join(parts)}")
        for k, v in expected.items():
            if tuple(state[k].shape) != tuple(v.shape):
                raise SoundvjError(
                    f"{source}: weight {k} has shape {list(state[k].shape)}, the config needs {list(v.shape)}"
                )
        G.load_state_dict(state, strict=True)
    return G.eval().requires_grad_(False)


def generator_from_pickle(path: str | os.PathLike, key: str = "G_ema") -> Generator:
    """An NVIDIA network pickle's generator, read without executing anything stored in the file."""
    from core.stylegan3.nvidia_pickle import read_network_pickle

    net = read_network_pickle(path, key=key)
    if "synthesis.input.freqs" not in net.state_dict:
        raise SoundvjError(
            f"{path}: {key} ({net.class_name}) is not a StyleGAN3 generator (no synthesis.input.freqs)"
        )
    if net.init_args:
        raise SoundvjError(f"{path}: {key} was built with positional arguments, expected keyword arguments")
    return build_generator(net.init_kwargs, net.state_dict, path)


def load_generator(path: str | os.PathLike | None = None, device: str | torch.device | None = None) -> Generator:
    """A ready-to-run generator (eval mode, no grads) from an NVIDIA `.pkl`, a soundvj `.safetensors`,
    or None / "default" for the embedded default."""
    dev = pick_device(device)
    if path is None or str(path) == DEFAULT_MODEL_NAME:
        from core.default_model import default_generator

        return default_generator().to(dev)
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
        raise SoundvjError(f"{path}: cannot read the file ({e.strerror or e})") from None
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
