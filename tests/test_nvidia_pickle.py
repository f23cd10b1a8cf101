"""Reading NVIDIA network pickles without executing them (core/stylegan3/nvidia_pickle.py)."""

from __future__ import annotations

import io
import os
import pickle
import random
import shlex
import struct
import subprocess
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import SoundvjError
from core.stylegan3 import nvidia_pickle
from core.stylegan3.nvidia_pickle import PickledNetwork, list_pickle_contents, read_network_pickle
from tests.nvidia_pickle_fakes import (
    FAKE_MODULE_NAMES,
    EasyDict,
    Persistent,
    Reduces,
    dump_snapshot,
    forbid_imports,
    marker_source,
)

GENERATOR = "training.networks_stylegan3.Generator"
DISCRIMINATOR = "training.networks_stylegan2.Discriminator"


class Layer(torch.nn.Module):
    """A StyleGAN3-ish layer: parameter, plain Linear child, buffers (None, non-persistent), numpy attributes."""

    def __init__(self, channels: int):
        super().__init__()
        self.affine = torch.nn.Linear(3, channels)  # not persistent: pickled via copyreg
        self.weight = torch.nn.Parameter(torch.randn(channels, 3))
        self.register_parameter("bias", None)
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", None)
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
        self.size = np.broadcast_to(np.asarray(36), [2])
        self.sampling_rate = np.float64(16.5)
        self.channels = [channels, channels * 2]
        self.name = f"L0_36_{channels}"


class Synthesis(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer_names = ["L0", "L1"]
        self.L0 = Layer(4)
        self.L1 = Layer(2)
        self.register_buffer("steps", torch.arange(5, dtype=torch.int64))
        self.register_buffer("mask", torch.tensor([True, False]))


class Net(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.z_dim = 8
        self.img_resolution = 64
        self.mapping = Layer(3)
        self.synthesis = Synthesis()
        self.register_buffer("w_avg", torch.randn(8, dtype=torch.float16))
        self.transposed = torch.nn.Parameter(torch.randn(3, 5).t())  # non-contiguous view of a storage
        # Python attributes make torch pickle these via _rebuild_from_type_v2 / _rebuild_parameter_with_state.
        self.w_avg.note = "tensor attribute"
        self.transposed.note = "parameter attribute"


INIT_KWARGS = dict(
    z_dim=8, c_dim=0, img_resolution=64,
    mapping_kwargs=EasyDict(num_layers=2, inner=EasyDict(beta=0.998, taps=[1, 2])),
    channel_base=4096, conv_kernel=3,
)


def snapshot(tmp_path: Path, keys=("G", "D", "G_ema")) -> tuple[dict, dict]:
    """A network-snapshot dict like NVIDIA's: returns (pickled dict, the real modules by key)."""
    source = marker_source(tmp_path / "MODULE_SRC_RAN")
    modules = {"G": Net(0), "D": Net(1), "G_ema": Net(2)}
    wrapped = {
        "G": Persistent(modules["G"], GENERATOR, source, init_kwargs=INIT_KWARGS),
        "D": Persistent(modules["D"], DISCRIMINATOR, source, init_args=(1, "x"), init_kwargs={"c_dim": 0}),
        "G_ema": Persistent(modules["G_ema"], GENERATOR, source, init_kwargs=INIT_KWARGS),
    }
    contents = {k: wrapped[k] for k in keys}
    contents["augment_pipe"] = None
    contents["training_set_kwargs"] = EasyDict(path="data.zip", resolution=64)
    return contents, modules


def assert_state_dicts_equal(loaded: dict, expected: dict) -> None:
    assert list(loaded) == list(expected)
    for name, tensor in expected.items():
        assert type(loaded[name]) is torch.Tensor and not loaded[name].requires_grad, name
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


def assert_one_line_error(error: pytest.ExceptionInfo, path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_reads_generator_exactly_without_nvidia_code(tmp_path, protocol):
    contents, modules = snapshot(tmp_path)
    path = tmp_path / "network-snapshot-000100.pkl"
    data = dump_snapshot(path, contents, protocol)
    assert b"_rebuild_from_type_v2" in data and b"_rebuild_parameter_with_state" in data
    assert not any(name in sys.modules for name in FAKE_MODULE_NAMES)

    with forbid_imports("torch_utils", "dnnlib", "training") as guard:
        net = read_network_pickle(path)
    assert guard.attempts == []
    assert not (tmp_path / "MODULE_SRC_RAN").exists()

    assert isinstance(net, PickledNetwork) and net.class_name == GENERATOR
    assert_state_dicts_equal(net.state_dict, modules["G_ema"].state_dict())
    assert "synthesis.L0.scratch" not in net.state_dict and "synthesis.L0.up_filter" not in net.state_dict
    assert "mapping.affine.weight" in net.state_dict  # the plain (copyreg) child is walked too
    assert net.init_args == ()
    assert net.init_kwargs == INIT_KWARGS
    assert type(net.init_kwargs["mapping_kwargs"]) is dict and type(net.init_kwargs["mapping_kwargs"]["inner"]) is dict
    assert net.attributes["z_dim"] == 8 and net.attributes["img_resolution"] == 64
    assert net.available_keys == ["G", "D", "G_ema", "augment_pipe", "training_set_kwargs"]


def test_numpy_attributes_and_nested_modules_keep_their_values(tmp_path):
    contents, modules = snapshot(tmp_path)
    path = tmp_path / "net.pkl"
    dump_snapshot(path, {"G_ema": Persistent(modules["G_ema"].synthesis.L1, "training.x.Layer", "pass")})
    net = read_network_pickle(path)
    size = net.attributes["size"]
    assert isinstance(size, np.ndarray) and size.tolist() == [36, 36]
    assert type(net.attributes["sampling_rate"]) is np.float64 and net.attributes["sampling_rate"] == 16.5
    assert net.attributes["channels"] == [2, 4] and net.attributes["name"] == "L0_36_2"
    assert list(net.state_dict) == ["weight", "magnitude_ema", "affine.weight", "affine.bias"]


def test_selects_g_d_or_g_ema(tmp_path):
    contents, modules = snapshot(tmp_path)
    path = tmp_path / "net.pkl"
    dump_snapshot(path, contents)
    for key, class_name in (("G", GENERATOR), ("D", DISCRIMINATOR), ("G_ema", GENERATOR)):
        net = read_network_pickle(path, key=key)
        assert net.class_name == class_name
        assert_state_dicts_equal(net.state_dict, modules[key].state_dict())
    assert read_network_pickle(path, key="D").init_args == (1, "x")
    g_w_avg, g_ema_w_avg = (read_network_pickle(path, key).state_dict["w_avg"] for key in ("G", "G_ema"))
    assert not torch.equal(g_w_avg, g_ema_w_avg)
    assert list_pickle_contents(path) == {
        "G": GENERATOR, "D": DISCRIMINATOR, "G_ema": GENERATOR, "augment_pipe": None, "training_set_kwargs": None,
    }


def test_missing_key_lists_the_keys_present(tmp_path):
    contents, _ = snapshot(tmp_path, keys=("G", "D"))
    path = tmp_path / "net.pkl"
    dump_snapshot(path, contents)
    with pytest.raises(SoundvjError) as error:
        read_network_pickle(path)  # G_ema by default
    message = assert_one_line_error(error, path)
    assert "'G_ema'" in message and "G, D, augment_pipe, training_set_kwargs" in message
    with pytest.raises(SoundvjError, match="no generator"):
        read_network_pickle(path, key="training_set_kwargs")


def test_real_generator_module_tree_round_trips_into_our_generator(tmp_path, sg3_fixtures):
    from core.stylegan3.networks import Generator

    config = sg3_fixtures["t64"]["config"]
    official_like = Generator(**config)
    path = tmp_path / "sg3.pkl"
    dump_snapshot(path, {"G_ema": Persistent(official_like, GENERATOR, "raise SystemExit", init_kwargs=dict(config),
                                             plain_types=())})
    net = read_network_pickle(path)
    assert_state_dicts_equal(net.state_dict, official_like.state_dict())
    rebuilt = Generator(**net.init_kwargs)
    rebuilt.load_state_dict(net.state_dict, strict=True)


# ---------------------------------------------------------------------------------------------
# Malicious pickles: refused, and nothing ran.


def touch_command(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def write_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('x')"


def evil_storage_bytes(marker: Path) -> bytes:
    """A torch.save (legacy format, as in tensor pickles) of an object that runs os.system."""
    buffer = io.BytesIO()
    torch.save(Reduces(os.system, touch_command(marker)), buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def tensor_with_payload(marker: Path) -> torch.Tensor:
    tensor = torch.ones(2)
    tensor.payload = Reduces(os.system, touch_command(marker))  # pickled in the tensor's state
    return tensor


def module_with_payload(marker: Path) -> torch.nn.Module:
    module = Layer(2)
    module.payload = Reduces(eval, write_code(marker))  # pickled in the persistent state
    return module


def module_with_tensor_payload(marker: Path) -> torch.nn.Module:
    module = Layer(2)
    module.register_buffer("evil", tensor_with_payload(marker))
    return module


PAYLOADS = {
    "os.system": lambda m: Reduces(os.system, touch_command(m)),
    "builtins.eval": lambda m: Reduces(eval, write_code(m)),
    "builtins.exec": lambda m: Reduces(exec, write_code(m)),
    "subprocess.Popen": lambda m: Reduces(subprocess.Popen, ["touch", str(m)]),
    "tensor state": lambda m: tensor_with_payload(m),
    "persistent state": lambda m: Persistent(module_with_payload(m), GENERATOR, "pass"),
    "buffer state": lambda m: Persistent(module_with_tensor_payload(m), GENERATOR, "pass"),
    "storage bytes": lambda m: Reduces(torch.storage._load_from_bytes, evil_storage_bytes(m)),
    "zip storage bytes": lambda m: Reduces(
        torch.storage._load_from_bytes, zip_torch_save(Reduces(os.system, touch_command(m)))
    ),
}


def zip_torch_save(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path, payload):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pkl"
    dump_snapshot(path, {"G_ema": PAYLOADS[payload](marker), "D": None})
    with pytest.raises(SoundvjError) as error:
        read_network_pickle(path)
    assert_one_line_error(error, path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["os.system", "storage bytes"])
def test_the_payloads_are_live_under_plain_pickle(tmp_path, payload):
    # Control: the same bytes do run code with pickle.loads, so the refusal above is meaningful.
    marker = tmp_path / "PWNED"
    data = pickle.dumps({"G_ema": PAYLOADS[payload](marker)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pickle.loads(data)
    assert marker.exists()


BUILD_X = b"N}X\x01\x00\x00\x00xK\x01s\x86b."
RECONSTRUCT_LINEAR = b"\x80\x02ccopy_reg\n_reconstructor\nctorch.nn.modules.linear\nLinear\n"
RAW_PICKLES = {
    "unknown global": (b"\x80\x02cmypkg\nEvil\n)R.", "mypkg.Evil"),
    "stack global": (b"\x80\x04\x8c\x05mypkg\x8c\x04Evil\x93)R.", "mypkg.Evil"),
    "persistent id": (b"\x80\x04\x8c\x011Q.", "persistent ids"),
    # BUILD with slot state {'x': 1} (None, {...}): must not set attributes on our objects or classes
    "BUILD on a loader function": (b"\x80\x02ctorch._utils\n_rebuild_parameter\n" + BUILD_X, "refusing"),
    "BUILD on the EasyDict class": (b"\x80\x02cdnnlib.util\nEasyDict\n" + BUILD_X, ""),
    "copyreg on a foreign base": (RECONSTRUCT_LINEAR + b"c__builtin__\nlist\nN\x87R.", "builtins.list"),
    "copyreg with a wrong base": (RECONSTRUCT_LINEAR + b"c__builtin__\ndict\nN\x87R.", "copyreg._reconstructor"),
}


@pytest.mark.parametrize("case", list(RAW_PICKLES))
def test_hand_made_hostile_opcodes_are_refused(tmp_path, case):
    data, expected = RAW_PICKLES[case]
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(SoundvjError) as error:
        read_network_pickle(path)
    assert expected in assert_one_line_error(error, path)
    assert not hasattr(nvidia_pickle._EasyDict, "x")  # BUILD did not reach our classes


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    # torch's set_() would silently grow the 4-element storage to 10**9 elements.
    path = tmp_path / "forged.pkl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        storage = torch.ones(4).storage()
        forged = Reduces(torch._utils._rebuild_tensor_v2, storage, 0, (10**9,), (1,), False, OrderedDict())
        dump_snapshot(path, {"G_ema": forged})
    with pytest.raises(SoundvjError, match="past the end of its storage"):
        read_network_pickle(path)


def test_storage_declaring_more_data_than_present_is_refused_before_allocating(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        genuine = torch.ones(4).storage().__reduce__()[1][0]
    assert b"cpuq\x03K\x04" in genuine  # numel 4 in the storage's persistent id
    forged = genuine.replace(b"cpuq\x03K\x04", b"cpuq\x03J" + struct.pack("<i", 10**9))
    path = tmp_path / "forged.pkl"
    dump_snapshot(path, {"G_ema": Reduces(torch.storage._load_from_bytes, forged)})
    with pytest.raises(SoundvjError, match="shorter than it declares"):
        read_network_pickle(path)


def test_numpy_object_array_with_forged_shape_is_refused(tmp_path):
    # Under plain pickle this state crashes numpy (segfault); it must never reach numpy.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct

    class ForgedArray:
        def __reduce__(self):
            return (_reconstruct, (np.ndarray, (0,), b"b"), (1, (10**9,), np.dtype("O"), False, [1]))

    module = Layer(2)
    module.evil = ForgedArray()
    path = tmp_path / "forged.pkl"
    dump_snapshot(path, {"G_ema": Persistent(module, GENERATOR, "pass")})
    with pytest.raises(SoundvjError, match="Python objects"):
        read_network_pickle(path)


def test_repeated_copies_of_one_big_value_hit_the_memory_budget(tmp_path):
    # 100k-element tuple, then torch.Size(tuple) 1000 times: 6 bytes of pickle per 800 KB copy.
    data = bytearray(b"\x80\x04ctorch\nSize\n\x94(" + b"K\x01" * 100_000 + b"t\x94")
    data += b"h\x00h\x01\x85R0" * 1000 + b"N."
    path = tmp_path / "bomb.pkl"
    path.write_bytes(bytes(data))
    with pytest.raises(SoundvjError, match="MiB"):
        read_network_pickle(path)


# ---------------------------------------------------------------------------------------------
# Files that are not network pickles.


def test_broken_files_give_one_line_errors(tmp_path):
    contents, _ = snapshot(tmp_path)
    with_networks = dump_snapshot(tmp_path / "good.pkl", contents)
    cases = {
        "truncated.pkl": with_networks[: len(with_networks) // 2],
        "random.pkl": random.Random(0).randbytes(4096),
        "empty.pkl": b"",
        "list.pkl": pickle.dumps([1, 2, 3]),
        "dict-without-networks.pkl": pickle.dumps({"x": 1}),
    }
    expected = {"truncated.pkl": "truncated", "empty.pkl": "empty", "list.pkl": "no generator",
                "dict-without-networks.pkl": "no network under 'G_ema'; the pickle holds: x"}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(SoundvjError) as error:
            read_network_pickle(path)
        message = assert_one_line_error(error, path)
        assert expected.get(name, "") in message, message


def test_missing_file_and_directory(tmp_path):
    for path in (tmp_path / "nope.pkl", tmp_path):
        with pytest.raises(SoundvjError) as error:
            read_network_pickle(path)
        assert_one_line_error(error, path)
        with pytest.raises(SoundvjError):
            list_pickle_contents(path)
