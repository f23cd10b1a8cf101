"""Hostile and unlucky model files (issue 11): each gets one line and exit 2, and no valid file is refused."""

from __future__ import annotations

import struct

import pytest
import torch

from core.cli import main
from tests.conftest import fixture_generator
from tests.nvidia_pickle_fakes import Persistent, dump_snapshot

GENERATOR = "training.networks_stylegan3.Generator"


def assert_one_line_error(capsys, *expected: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("soundvj: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture()
def t64_pickle_factory(tmp_path, sg3_fixtures):
    fx = sg3_fixtures["t64"]
    G = fixture_generator(fx)

    def make(name: str):
        path = tmp_path / name
        dump_snapshot(path, {"G_ema": Persistent(G, GENERATOR, "pass", init_kwargs=dict(fx["config"]), plain_types=())})
        return path

    return make


def _header_length(path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_converted_file_whose_header_length_starts_with_0x80_is_read(t64_pickle_factory, tmp_path, capsys):
    """Defect 1: the source pickle's name goes into the metadata, and 1 in 32 names make the
    header length's low byte 0x80, the byte a pickle starts with. Every converted file must load."""
    out = tmp_path / "c.safetensors"
    assert main(["convert", str(t64_pickle_factory("n.pkl")), "-o", str(out)]) == 0
    base = _header_length(out)
    extra = (128 - base) % 256  # one name character is one header byte; padding is to 8 bytes
    for tweak in range(0, 16):
        name = "network-snapshot-" + "a" * (extra + tweak - len("network-snapshot-") + 1) + ".pkl"
        assert main(["convert", str(t64_pickle_factory(name)), "-o", str(out)]) == 0
        if out.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("could not make a header length ending in 0x80")
    capsys.readouterr()
    assert main(["info", str(out), "--device", "cpu"]) == 0, capsys.readouterr().err
    assert "StyleGAN3-T, 64x64 px" in capsys.readouterr().out
