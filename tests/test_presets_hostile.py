"""Hostile and careless presets: one line, bounded memory and time, never a huge message."""

from __future__ import annotations

from pathlib import Path

import pytest

import core.presets as presets_mod
from core.errors import SoundvjError
from core.presets import load_preset
from tests.hostile_input import assert_refused, run_soundvj


@pytest.fixture(autouse=True)
def _no_user_presets(monkeypatch):
    monkeypatch.delenv(presets_mod.USER_DIR_ENV, raising=False)


def write(tmp_path: Path, text: str, name: str = "look.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def laughs(levels: int = 9) -> str:
    """A flow sequence whose anchors each hold nine aliases of the one before: 9^levels strings."""
    parts = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        parts.append(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "[" + ", ".join(parts) + "]"


@pytest.mark.parametrize("where", ["name", "version", "param"])
def test_alias_bomb_is_refused_quickly_in_one_line(tmp_path, where):
    """Formatting the expanded value of a billion-laughs alias must not take all memory."""
    bomb = laughs()
    text = {
        "name": f"version: 1\nname: {bomb}\n",
        "version": f"version: {bomb}\n",
        "param": f"version: 1\nparams:\n  alpha: {bomb}\n",
    }[where]
    path = write(tmp_path, text)
    assert path.stat().st_size < 1024
    if where == "param":  # one in a child process under the memory cap; the others in this process
        run = run_soundvj(["render", "--demo", "-o", str(tmp_path / "out.mp4"), "--preset", str(path)])
        assert_refused(run, str(path))
        assert len(run.stderr) < 400
        assert not (tmp_path / "out.mp4").exists()
        return
    with pytest.raises(SoundvjError) as e:
        load_preset(path)
    assert str(path) in str(e.value) and "aliases" in str(e.value) and len(str(e.value)) < 400


def test_huge_preset_file_is_refused_by_size(tmp_path):
    """A 50 MB preset holding a 25-million-element list is refused by its size, not parsed."""
    path = tmp_path / "huge.yaml"
    with open(path, "w") as f:
        f.write("version: 1\nparams:\n  alpha: [")
        f.write("0," * 25_000_000)
        f.write("0]\n")
    run = run_soundvj(["render", "--demo", "-o", str(tmp_path / "out.mp4"), "--preset", str(path)])
    assert_refused(run, str(path), "too large")
    assert run.seconds < 30


@pytest.mark.parametrize(
    "text,key",
    [
        ("version: 1\nparams:\n  alpha: 0.2\n  alpha: 0.9\n", "alpha"),
        ("version: 1\nname: a\nname: b\n", "name"),
        ("version: 1\nparams: {noise: 0.1}\nparams: {noise: 0.2}\n", "params"),
    ],
)
def test_duplicate_keys_are_an_error_naming_the_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(SoundvjError) as e:
        load_preset(path)
    msg = str(e.value)
    assert str(path) in msg and "duplicate" in msg and repr(key) in msg and "\n" not in msg


@pytest.mark.parametrize("key", ["seed", "alpha", "fps"])
def test_huge_integer_values_are_out_of_range_not_overflow(tmp_path, key):
    """A 400-digit integer is out of range, not an OverflowError (float conversion) with a traceback."""
    path = write(tmp_path, f"version: 1\nparams:\n  {key}: {'9' * 400}\n")
    with pytest.raises(SoundvjError) as e:
        load_preset(path)
    msg = str(e.value)
    assert str(path) in msg and key in msg and "out of range" in msg and len(msg) < 300


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nparams:\n  seed: " + "9" * 5000 + "\n",  # past Python's int-to-string digit limit
        "version: 1\nparams:\n  alpha: " + "[" * 5000 + "]" * 5000 + "\n",  # deeper than the parser's recursion
        "version: 1\nname: " + "x" * 20000 + "1\nparams: {alpha: 7}\n",
    ],
    ids=["5000-digit-int", "5000-deep-list", "long-name"],
)
def test_odd_values_give_a_short_one_line_error(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(SoundvjError) as e:
        load_preset(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg and len(msg) < 400
