"""Property-based tests (Hypothesis) of everything that reads user input: the preset
loader, the render command's numbers, the safetensors header reader and the restricted unpickler.
For any input: a result or one `SoundvjError` line; never another exception, never more than a set
time (Hypothesis' deadline) and memory (tracemalloc's peak for the pure-Python readers)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import struct
import tempfile
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import SoundvjError
from core.params import NAMES

# SOUNDVJ_PROPERTY_EXAMPLES raises the count for a longer local hunt.
PROPERTY = settings(max_examples=int(os.environ.get("SOUNDVJ_PROPERTY_EXAMPLES", "60")), deadline=timedelta(seconds=10),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MEMORY_LIMIT = 64 << 20  # bytes a reader may allocate on a few kB of input


def assert_user_error(error: SoundvjError) -> None:
    text = str(error)
    assert "\n" not in text and 0 < len(text) < 600, text


@contextlib.contextmanager
def bounded_memory(limit: int = MEMORY_LIMIT):
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
        assert peak < limit, f"peak {peak / 2**20:.1f} MB"
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def mutations(base: bytes, alphabet: bytes | None = None) -> st.SearchStrategy[bytes]:
    """`base` with a few bytes overwritten, inserted or deleted."""
    byte = st.sampled_from(list(alphabet)) if alphabet else st.integers(0, 255)
    edit = st.tuples(st.sampled_from(["set", "insert", "delete"]), st.integers(0, max(0, len(base) - 1)), byte)

    def apply(edits: list) -> bytes:
        data = bytearray(base)
        for kind, pos, value in edits:
            pos = min(pos, len(data))
            if kind == "set" and pos < len(data):
                data[pos] = value
            elif kind == "insert":
                data.insert(pos, value)
            elif kind == "delete" and pos < len(data):
                del data[pos]
        return bytes(data)

    return st.lists(edit, min_size=1, max_size=6).map(apply)


# --- presets -------------------------------------------------------------------------------------

VALID_PRESET = b"version: 1\nname: storm\ndescription: wild\nparams:\n  alpha: 0.75\n  noise: 0.9\n  seed: 3\n"
YAML_BYTES = b"&*:-[]{}!|>'\"#\n ,?0123456789.eE+-_aln"

yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30)
)
yaml_values = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _load_preset_bytes(scratch: Path, data: bytes) -> None:
    from core.presets import load_preset

    path = scratch / "p.yaml"
    path.write_bytes(data)
    with bounded_memory():
        try:
            preset = load_preset(path)
        except SoundvjError as e:
            assert_user_error(e)
            return
    assert set(preset.values) <= set(NAMES)


@PROPERTY
@given(data=mutations(VALID_PRESET, YAML_BYTES))
def test_mutated_presets(scratch, data):
    _load_preset_bytes(scratch, data)


@PROPERTY
@given(data=st.binary(max_size=300))
def test_random_bytes_as_presets(scratch, data):
    _load_preset_bytes(scratch, data)


@PROPERTY
@given(key=st.sampled_from(NAMES + ("name", "version", "bogus")), value=yaml_values)
def test_presets_with_any_value(scratch, key, value):
    import yaml

    top = {"version": 1, "params": {key: value}} if key in NAMES else {"version": 1, key: value}
    if key == "version":
        top = {"version": value}
    _load_preset_bytes(scratch, yaml.safe_dump(top).encode())


# --- the render command's numbers ----------------------------------------------------------------

number_text = st.one_of(
    st.integers().map(str),
    st.integers(min_value=10**18, max_value=10**500).map(str),
    st.floats().map(repr),
    st.sampled_from(["1e308", "-1e308", "nan", "inf", "-inf", "-0", "0x10", "1_000", "", " 3 ", "1e-320", "none", "--"]),
    st.text(alphabet="0123456789.eE+-xX_ ", max_size=12),
)
FLAGS = ["--start", "--seconds", "--crf", "--batch", "--seed", "--fps", "--alpha", "--alpha-fine", "--noise",
         "--psi", "--window-seconds", "--gain-db", "--rotate-deg", "--pan-x", "--pan-y", "--size"]


@PROPERTY
@given(flags=st.lists(st.tuples(st.sampled_from(FLAGS), number_text), min_size=1, max_size=4),
       demo=st.booleans())
def test_render_numbers(scratch, flags, demo):
    from core.cli import build_parser
    from core.render import check_render_args

    wav = scratch / "a.wav"
    wav.touch()
    argv = ["render", "--demo" if demo else str(wav), "-o", str(scratch / "out.mp4")]
    for flag, text in flags:
        argv += [f"{flag}={text}"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:
            assert e.code == 2 and err.getvalue().count("\n") <= 2, err.getvalue()  # usage + one error line
            return
    try:
        size, params = check_render_args(args)
    except SoundvjError as e:
        assert_user_error(e)
        return
    assert params.fps > 0 and (size is None or min(size) >= 2)


@pytest.mark.parametrize("flag", ["--crf", "--seconds", "--start", "--seed", "--alpha"])
def test_double_dash_as_a_flag_value_is_a_usage_error(flag):
    # Python 3.11's argparse hands `--flag=--` through as an empty list; the parser must refuse it
    from core.cli import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        build_parser().parse_args(["render", "--demo", "-o", "out.mp4", f"{flag}=--"])
    assert e.value.code == 2 and flag in err.getvalue() and err.getvalue().count("\n") == 1


# --- the safetensors header reader ---------------------------------------------------------------

def _small_model_file() -> bytes:
    from safetensors.torch import save

    meta = {"soundvj.format": "soundvj-model", "soundvj.version": "1",
            "generator.config": json.dumps({"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 16, "img_channels": 3})}
    return save({"generator.mapping.w_avg": torch.zeros(8), "generator.x": torch.ones(2, 3)}, metadata=meta)


SAFETENSORS = _small_model_file()


def _read_model_bytes(scratch: Path, data: bytes) -> None:
    from core.model_file import model_kind, read_model_file

    path = scratch / "m.safetensors"
    path.write_bytes(data)
    try:
        if model_kind(path) == "safetensors":
            read_model_file(path)
    except SoundvjError as e:
        assert_user_error(e)


@PROPERTY
@given(data=mutations(SAFETENSORS[:120]).map(lambda head: head + SAFETENSORS[120:]))
def test_mutated_safetensors_headers(scratch, data):
    _read_model_bytes(scratch, data)


@PROPERTY
@given(length=st.integers(0, 2**64 - 1), rest=st.binary(max_size=64))
def test_any_safetensors_header_length(scratch, length, rest):
    _read_model_bytes(scratch, struct.pack("<Q", length) + b"{" + rest)


# --- the restricted unpickler --------------------------------------------------------------------

def _small_snapshot() -> bytes:
    from tests.nvidia_pickle_fakes import Persistent, fake_nvidia_modules

    with fake_nvidia_modules():
        return pickle.dumps({"G_ema": Persistent(torch.nn.Linear(2, 2), "training.networks_stylegan3.Generator",
                                                 "pass", init_kwargs={"z_dim": 2}, plain_types=())}, protocol=2)


SNAPSHOT = _small_snapshot()

OPS = [b"]", b"}", b")", b"(", b"t", b"\x85", b"\x86", b"\x87", b"a", b"e", b"s", b"u", b"0", b"2", b"N",
       b"\x88", b"\x89", b"\x94", b"b", b"R", b"\x81", b"\x8f", b"\x90", b"\x91", b"l", b"d"]
ARG_OPS = {b"K": st.integers(0, 255).map(lambda n: bytes([n])),  # BININT1
           b"h": st.integers(0, 255).map(lambda n: bytes([n])),  # BINGET
           b"q": st.integers(0, 255).map(lambda n: bytes([n])),  # BINPUT
           b"\x8c": st.text(max_size=8).map(lambda t: bytes([len(t.encode())]) + t.encode()),  # SHORT_BINUNICODE
           b"c": st.sampled_from([b"builtins\nset\n", b"collections\nOrderedDict\n", b"torch\nSize\n",
                                  b"torch._utils\n_rebuild_tensor_v2\n", b"copyreg\n_reconstructor\n",
                                  b"builtins\nobject\n", b"dnnlib.util\nEasyDict\n", b"os\nsystem\n",
                                  b"torch_utils.persistence\n_reconstruct_persistent_obj\n"])}
opcode = st.one_of(st.sampled_from(OPS), *[arg.map(lambda a, op=op: op + a) for op, arg in ARG_OPS.items()])
opcode_streams = st.lists(opcode, max_size=60).map(lambda ops: b"\x80\x02" + b"".join(ops) + b".")


def _read_pickle_bytes(scratch: Path, data: bytes) -> None:
    from core.stylegan3.nvidia_pickle import read_network_pickle

    path = scratch / "n.pkl"
    path.write_bytes(data)
    with bounded_memory():
        try:
            read_network_pickle(path)
        except SoundvjError as e:
            assert_user_error(e)


@PROPERTY
@given(data=opcode_streams)
def test_random_opcode_streams(scratch, data):
    _read_pickle_bytes(scratch, data)


@PROPERTY
@given(data=mutations(SNAPSHOT))
def test_mutated_snapshots(scratch, data):
    _read_pickle_bytes(scratch, data)
