"""`soundvj data demo`: the six-class set from Debian packages, built here against a small fake source
tree with the packages' layout (and once against the installed packages when they are there), and the
`HOLDOUT.txt` held-out list that `training.data.datasets` reads."""

from __future__ import annotations

import io
import json
import os
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from core.audio.mel import MelConfig
from core.errors import SoundvjError
from training.data.config import DataConfig
from training.data.datasets import open_datasets
from training.data.demo import scenes
from training.data.demo import sources as S
from training.data.demo.build import DemoSettings, build, missing_packages
from training.data.demo.sounds import (
    SAMPLE_RATE,
    decode_wav_bytes,
    loop_to,
    normalise,
    procedural_crackle,
    procedural_wind,
    read_opensfx_catalogue,
)

SR = 22050


def wav_bytes(samples: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def noise(seed: int, seconds: float, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(seconds * sr))).astype(np.float32)


def catalogue_bytes(entries: list[tuple[str, bytes]]) -> bytes:
    """An OpenTTD .cat: (offset, size) table, then per entry a length byte, the name + NUL, the RIFF data."""
    table = len(entries) * 8
    bodies, offsets, pos = [], [], table
    for name, riff in entries:
        label = name.encode("latin-1") + b"\0"
        body = bytes([len(label)]) + label + riff
        offsets.append((pos, len(body)))
        bodies.append(body)
        pos += len(body)
    return b"".join(struct.pack("<II", o, s) for o, s in offsets) + b"".join(bodies)


def make_fake_tree(root: Path) -> Path:
    """Every file the demo set reads, at the packages' paths, as short noise recordings and tiny pictures."""
    from PIL import Image

    for k, src in enumerate(s for s in S.SOUNDS if s.cat_index is None):
        path = root / src.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # a wav body under a .ogg name decodes the same (FFmpeg probes the content)
            path.write_bytes(wav_bytes(noise(k, 3.3)))
    # megaglest's marker file is one of the sources; OpenSFX: a catalogue with 73 samples
    entries = [(f"Sample {i}. By Someone {i}. License: CC0.", wav_bytes(noise(100 + i, 1.5))) for i in range(73)]
    cat = root / S.OPENSFX_CAT
    cat.parent.mkdir(parents=True, exist_ok=True)
    cat.write_bytes(catalogue_bytes(entries))
    for i, photo in enumerate(S.PHOTOS):
        folder = root / photo.folder
        (folder / "contents" / "images").mkdir(parents=True, exist_ok=True)
        colour = np.array([40 * i % 255, 90, 200 - 20 * i], np.uint8)
        pixels = np.broadcast_to(colour, (60, 80, 3)).copy()
        pixels[::7] = 255 - colour  # some structure for the crops
        Image.fromarray(pixels).save(folder / "contents" / "images" / "1920x1080.png")
        meta = {"KPlugin": {"Authors": [{"Name": f"Photographer {i}"}], "License": "LGPLv3", "Name": photo.wallpaper}}
        (folder / "metadata.json").write_text(json.dumps(meta))
    return root


TINY = dict(size=16, images_per_class=3, clips_per_class=2, clip_seconds=1.0, fps=12.0, walk_seconds=2.5)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    return make_fake_tree(tmp_path_factory.mktemp("fake_root"))


@pytest.fixture(scope="module")
def built(fake_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "set"
    result = build(out, DemoSettings(**TINY, seed=3, source_root=str(fake_root)), log=lambda m: None)
    assert not result.already_complete
    return out


# --- sources, sounds, scenes -------------------------------------------------------------------------


def test_sources_name_every_class_once_with_training_and_held_out_material():
    assert S.CLASSES == ("rain", "birds", "insects", "wind", "engine", "fire")
    assert sorted(S.WALK_ORDER) == sorted(S.CLASSES)
    names = [s.name for s in S.SOUNDS]
    assert len(names) == len(set(names))
    for label in S.CLASSES:
        assert S.sounds_of(label, "train") and S.sounds_of(label, "heldout"), label
    held = {s.path for s in S.SOUNDS if s.use == "heldout"}
    assert f"{S.TILESETS}/autumn/sounds/rain.ogg" in held
    assert f"{S.TILESETS}/winter_forest/sounds/wind.ogg" in held
    # winter/sounds/wind.ogg is the same recording as the held-out wind: never used
    assert not any(s.path.endswith("winter/sounds/wind.ogg") for s in S.SOUNDS)
    # a file used for both training and held out is split into disjoint spans
    for held_src in (s for s in S.SOUNDS if s.use == "heldout"):
        for train_src in (s for s in S.SOUNDS if s.use == "train" and (s.path, s.cat_index) == (held_src.path, held_src.cat_index)):
            assert train_src.end is not None and train_src.end <= held_src.start


def test_opensfx_catalogue_is_read_with_names(tmp_path):
    cat = tmp_path / "x.cat"
    a, b = noise(1, 0.2), noise(2, 0.3)
    cat.write_bytes(catalogue_bytes([("First. By A.", wav_bytes(a)), ("Second. By B.", wav_bytes(b))]))
    entries = read_opensfx_catalogue(cat)
    assert [name for name, _ in entries] == ["First. By A.", "Second. By B."]
    x, sr = decode_wav_bytes(entries[1][1], "x")
    assert sr == SR and len(x) == len(b) and np.allclose(x, np.clip(b, -1, 1), atol=1e-4)
    cat.write_bytes(b"\x05\x00\x00\x00garbage")
    with pytest.raises(SoundvjError, match="not an OpenTTD sound catalogue"):
        read_opensfx_catalogue(cat)


def test_loop_normalise_and_crackle():
    x = np.sin(np.linspace(0, 20, 1000)).astype(np.float32)
    looped = loop_to(x, 3500, 100)
    assert len(looped) == 3500 and np.abs(np.diff(looped)).max() < 0.1  # crossfaded joins, no clicks
    y = normalise(0.01 * noise(5, 1.0))
    assert abs(20 * np.log10(np.sqrt(np.mean(y**2))) + 20) < 0.1
    crackle = procedural_crackle(np.random.default_rng(0), 2.0)
    assert len(crackle) == 2 * SAMPLE_RATE
    d = np.diff(crackle)
    assert ((d - d.mean()) ** 4).mean() / d.var() ** 2 > 20  # impulsive, unlike noise (3)
    wind = procedural_wind(np.random.default_rng(0), 4.0)
    power = np.abs(np.fft.rfft(wind)) ** 2
    freqs = np.fft.rfftfreq(len(wind), 1 / SAMPLE_RATE)
    assert power[(freqs > 200) & (freqs < 1500)].sum() > 0.7 * power.sum()  # the real winds' band
    assert power[freqs > 3000].sum() < 0.01 * power.sum()
    level = np.sqrt(np.convolve(wind**2, np.ones(4410) / 4410, "valid"))[::2205]
    assert level.std() / level.mean() > 0.1  # gusts


def test_procedural_scenes_have_their_class_colours_and_move():
    means = {}
    for label, make in scenes.PROCEDURAL.items():
        look = make(np.random.default_rng(1), 32)
        a, b = look(0.0), look(1.5)
        assert a.shape == (32, 32, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
        assert np.abs(a - b).mean() > 1e-3, f"{label} does not move"
        means[label] = np.mean([make(np.random.default_rng(s), 32)(0.0).reshape(-1, 3).mean(0) for s in range(6)], axis=0)
    r, g, b = means["fire"]
    assert r > g > b
    assert means["insects"].mean() < 0.2 and means["insects"][2] > means["insects"][0]
    assert means["wind"][2] > means["wind"][0]


# --- the build -------------------------------------------------------------------------------------------


def test_build_writes_the_layout(built):
    from PIL import Image

    for label in S.CLASSES:
        pngs = sorted((built / "images" / label).glob("*.png"))
        assert len(pngs) == TINY["images_per_class"]
        with Image.open(pngs[0]) as im:
            assert im.size == (16, 16) and im.mode == "RGB"
        assert len(list((built / "clips" / label).glob(f"{label}-train-*.mp4"))) == TINY["clips_per_class"]
        assert list((built / "heldout_audio" / label).glob("*.wav"))
    holdout = [line for line in (built / "clips" / "HOLDOUT.txt").read_text().splitlines() if not line.startswith("#")]
    assert {line.split("/")[0] for line in holdout} == set(S.CLASSES)
    assert all((built / "clips" / line).is_file() for line in holdout)
    assert not list(built.parent.glob("*.partial"))


def test_held_out_clips_come_only_from_held_out_sources(built):
    import csv

    rows = list(csv.DictReader(open(built / "manifest.csv", encoding="utf-8")))
    held_names = {s.name for s in S.SOUNDS if s.use == "heldout"}
    holdout = {line for line in (built / "clips" / "HOLDOUT.txt").read_text().splitlines() if not line.startswith("#")}
    for row in rows:
        if row["file"].startswith("clips/"):
            listed = row["file"].removeprefix("clips/") in holdout
            assert listed == (row["use"] == "heldout"), row
            assert (row["sound"] in held_names) == listed, row


def test_demo_walk_goes_through_every_class(built):
    with wave.open(str(built / "demo_walk.wav")) as w:
        seconds = w.getnframes() / w.getframerate()
    assert seconds == pytest.approx(6 * TINY["walk_seconds"] + 1.0, abs=0.01)  # + the last crossfade's length
    lines = [line.split() for line in (built / "demo_walk.txt").read_text().splitlines() if not line.startswith("#")]
    assert [label for _, label in lines] == list(S.WALK_ORDER)
    starts = [float(t) for t, _ in lines]
    # class i > 0 starts in the middle of its 1 s crossfade, i * walk_seconds + 0.5
    assert starts == pytest.approx([0.0] + [i * TINY["walk_seconds"] + 0.5 for i in range(1, 6)], abs=0.01)


def test_credits_name_package_licence_and_credit_of_every_source(built):
    credits = json.loads((built / "credits.json").read_text(encoding="utf-8"))
    items = credits["sources"]
    for item in items:
        for key in ("file", "package", "licence", "credit", "class", "use"):
            assert item[key], (key, item)
        assert item["use"] in ("train", "heldout") and item["class"] in S.CLASSES
    sounds = {(i["file"], i["span"]) for i in items if i["kind"] == "sound"}
    for src in S.SOUNDS:
        assert (src.file, src.span_text) in sounds
    sfx = next(i for i in items if i["file"].endswith("opensfx.cat#52"))
    assert sfx["credit"] == "Sample 52. By Someone 52. License: CC0."  # the catalogue's own text
    photo = next(i for i in items if i["kind"] == "image" and "/Path/" in i["file"])
    assert "Photographer" in photo["credit"] and photo["licence"] == "LGPLv3" and photo["images"] > 0
    md = (built / "CREDITS.md").read_text(encoding="utf-8")
    assert "autumn/sounds/rain.ogg" in md and "winter_forest/sounds/wind.ogg" in md


def test_build_is_deterministic_and_seeded(fake_root, built, tmp_path):
    again = build(tmp_path / "again", DemoSettings(**TINY, seed=3, source_root=str(fake_root)), log=lambda m: None)
    other = build(tmp_path / "other", DemoSettings(**TINY, seed=4, source_root=str(fake_root)), log=lambda m: None)
    for rel in ("images/fire/fire-0001.png", "images/rain/rain-0000.png", "demo_walk.wav", "manifest.csv"):
        assert (again.out_dir / rel).read_bytes() == (built / rel).read_bytes(), rel
    assert (other.out_dir / "images/fire/fire-0001.png").read_bytes() != (built / "images/fire/fire-0001.png").read_bytes()


def test_clip_pictures_are_the_same_on_every_build(fake_root, tmp_path):
    """The clips' frames as the training stages decode them. x264 at crf 18 gave other frames on most
    builds here (rain at 32 px, fire and rain at 64 px), so a rebuilt set trained another stepper."""
    settings = DemoSettings(size=32, images_per_class=0, clips_per_class=2, clip_seconds=1.0, fps=24.0,
                            walk_seconds=2.5, seed=3, source_root=str(fake_root))
    sets = [build(tmp_path / f"set{k}", settings, log=lambda m: None).out_dir for k in range(3)]
    clips = sorted(p.relative_to(sets[0]) for p in sets[0].rglob("*.mp4"))
    assert len(clips) > 6
    for rel in clips:
        first = _decoded_frames(sets[0] / rel)
        for other in sets[1:]:
            assert np.array_equal(_decoded_frames(other / rel), first), rel


def _decoded_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_complete_set_is_left_alone_and_force_rebuilds(fake_root, tmp_path, capsys):
    from core.cli import main

    out = tmp_path / "set"
    args = ["data", "demo", str(out), "--source-root", str(fake_root), "--size", "16", "--images-per-class", "1",
            "--clips-per-class", "1", "--clip-seconds", "1", "--fps", "8", "--walk-seconds", "2.5", "-q"]
    assert main(args) == 0
    stamp = (out / "credits.json").stat().st_mtime_ns
    assert main(args) == 0
    assert "already a complete demo set" in capsys.readouterr().out
    assert (out / "credits.json").stat().st_mtime_ns == stamp
    assert main(args + ["--force"]) == 0
    assert not (tmp_path / "set.old").exists() and not (tmp_path / "set.partial").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    assert main(args[:2] + [str(foreign)] + args[3:]) == 2
    assert "not a complete demo set" in capsys.readouterr().err


def test_missing_packages_are_named(tmp_path, capsys):
    from core.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert sorted(missing_packages(empty)) == sorted(S.PACKAGE_MARKERS)
    assert main(["data", "demo", str(tmp_path / "out"), "--source-root", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "megaglest-data" in err and "openttd-opensfx" in err and "plasma-workspace-wallpapers" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_settings_are_one_line_errors():
    with pytest.raises(SoundvjError, match="--size 15"):
        DemoSettings(size=15)
    with pytest.raises(SoundvjError, match="--clip-seconds"):
        DemoSettings(clip_seconds=0.2)


# --- HOLDOUT.txt in training.data.datasets -------------------------------------------------------------


def write_wav(path: Path, samples: np.ndarray, sr: int = SR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_bytes(samples, sr))


@pytest.fixture()
def audio_set(tmp_path) -> Path:
    root = tmp_path / "set"
    for c, label in enumerate(("high", "low")):
        for i in range(4):
            t = np.arange(int(1.3 * SR)) / SR
            write_wav(root / label / f"{label}{i}.wav", (0.4 * np.sin(2 * np.pi * (300 + 3000 * (1 - c) + 50 * i) * t)).astype(np.float32))
    return root


def open_split(root: Path, tmp_path: Path, **kw):
    config = DataConfig(path=str(root), kind="audio", cache_dir=str(tmp_path / "cache"), **kw)
    train, holdout, _ = open_datasets(config, MelConfig(), None, verbose=False)
    return {c.entry.path.name for c in train.clips}, {c.entry.path.name for c in holdout.clips}


def test_holdout_list_defines_the_held_out_split(audio_set, tmp_path):
    hashed_train, hashed_holdout = open_split(audio_set, tmp_path, holdout_fraction=0.25)
    chosen = {"high0.wav", "high3.wav", "low2.wav"}
    assert chosen != hashed_holdout
    (audio_set / "HOLDOUT.txt").write_text("# held out\nhigh/high0.wav\n\nhigh/high3.wav\nlow/low2.wav\n")
    train, holdout = open_split(audio_set, tmp_path, holdout_fraction=0.25)
    assert holdout == chosen and train == {f"{c}{i}.wav" for c in ("high", "low") for i in range(4)} - chosen
    # holdout_fraction 0 holds out nothing, list or not
    train, holdout = open_split(audio_set, tmp_path, holdout_fraction=0.0)
    assert holdout == set() and len(train) == 8
    # without the list: the hash split, as before
    (audio_set / "HOLDOUT.txt").unlink()
    assert open_split(audio_set, tmp_path, holdout_fraction=0.25) == (hashed_train, hashed_holdout)


def test_holdout_list_naming_a_missing_or_malformed_entry_is_a_one_line_error(audio_set, tmp_path):
    (audio_set / "HOLDOUT.txt").write_text("high/high0.wav\nlow/nothere.wav\n")
    with pytest.raises(SoundvjError, match=r"HOLDOUT.txt line 2: 'low/nothere.wav' is not a clip of the dataset"):
        open_split(audio_set, tmp_path)
    (audio_set / "HOLDOUT.txt").write_text("high0.wav\n")
    with pytest.raises(SoundvjError, match=r"HOLDOUT.txt line 1: expected <class>/<file>"):
        open_split(audio_set, tmp_path)


# --- the installed packages ------------------------------------------------------------------------------


@pytest.mark.skipif(missing_packages(Path("/")) != [],
                    reason="needs the Debian packages megaglest-data, openttd-opensfx and plasma-workspace-wallpapers")
def test_build_from_the_installed_packages(tmp_path):
    result = build(tmp_path / "real", DemoSettings(size=32, images_per_class=2, clips_per_class=1, clip_seconds=2.0,
                                                    fps=8.0), log=lambda m: None)
    credits = json.loads((result.out_dir / "credits.json").read_text(encoding="utf-8"))
    heldout = {i["file"]: i["seconds"] for i in credits["sources"] if i["use"] == "heldout" and i["kind"] == "sound"}
    assert heldout[f"/{S.TILESETS}/autumn/sounds/rain.ogg"] == pytest.approx(15.8, abs=0.1)
    assert heldout[f"/{S.TILESETS}/winter_forest/sounds/wind.ogg"] == pytest.approx(31.8, abs=0.1)
    sfx = {i["file"]: i["credit"] for i in credits["sources"] if "opensfx.cat#" in i["file"]}
    assert "Wind" in sfx[f"/{S.OPENSFX_CAT}#52"] and "Anton" in sfx[f"/{S.OPENSFX_CAT}#52"]
    assert "bus" in sfx[f"/{S.OPENSFX_CAT}#27"].lower()
    assert result.heldout_clips >= 6 and os.path.getsize(result.out_dir / "demo_walk.wav") > 1e6


def test_missing_packages_are_installed_with_apt_get_as_root(monkeypatch, tmp_path):
    import subprocess

    import training.data.demo.build as build_module

    marker = tmp_path / "installed-by-apt"
    # Only the fake package: what this machine happens to have installed must not change the test.
    monkeypatch.setattr(S, "PACKAGE_MARKERS", {"fake-pkg": str(marker).lstrip("/")})
    calls = []

    def fake_run(command, **kw):
        calls.append((command, kw.get("env", {}).get("DEBIAN_FRONTEND")))
        if command[:2] == ["apt-get", "install"]:
            marker.write_text("")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(build_module.subprocess, "run", fake_run)
    monkeypatch.setattr(build_module.os, "geteuid", lambda: 0)
    build_module.ensure_packages(Path("/"), log=lambda m: None)
    assert calls == [(["apt-get", "install", "-y", "--no-install-recommends", "fake-pkg"], "noninteractive")]

    marker.unlink()
    calls.clear()
    monkeypatch.setattr(build_module.subprocess, "run",
                        lambda command, **kw: calls.append(command) or subprocess.CompletedProcess(command, 100, "", "E: Unable to locate package fake-pkg"))
    with pytest.raises(SoundvjError, match=r"apt-get could not install fake-pkg \(E: Unable to locate package fake-pkg\); install them with"):
        build_module.ensure_packages(Path("/"), log=lambda m: None)
    assert [c[:2] for c in calls] == [["apt-get", "install"], ["apt-get", "update"], ["apt-get", "install"]]

    monkeypatch.setattr(build_module.os, "geteuid", lambda: 1000)
    with pytest.raises(SoundvjError, match=r"packages missing: fake-pkg; install them with: apt-get install fake-pkg"):
        build_module.ensure_packages(Path("/"), log=lambda m: None)
