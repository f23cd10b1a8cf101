"""`soundvj data demo`: the six-class set from Debian packages, built here against a small fake source
tree with the packages' layout (one folder per package), the split by source (held-out packages never
trained on), fetching packages into the cache with the real dpkg-deb and tar, and the `HOLDOUT.txt`
held-out list that `training.data.datasets` reads."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.audio.mel import MelConfig
from core.errors import SoundvjError
from training.data.config import DataConfig
from training.data.datasets import open_datasets
from training.data.demo import scenes
from training.data.demo import sources as S
from training.data.demo import packages
from training.data.demo.build import DemoSettings, build
from training.data.demo.sounds import (
    SAMPLE_RATE,
    Recording,
    decode_wav_bytes,
    loop_to,
    normalise,
    read_opensfx_catalogue,
    source_shares,
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
    """Every file the demo set reads, at ROOT/<package>/<path>, as short noise recordings (inside zips
    where the package ships an archive) and tiny pictures."""
    from PIL import Image

    archives: dict[Path, list[tuple[str, bytes]]] = {}
    # a file split into spans is long enough for each (silence before its last span, noise in it)
    span_ends = {}
    for src in S.SOUNDS:
        span_ends[(src.path, src.member)] = max(span_ends.get((src.path, src.member), 0.0), src.start)
    for k, src in enumerate(s for s in S.SOUNDS if s.cat_index is None):
        path = root / src.package / src.path
        path.parent.mkdir(parents=True, exist_ok=True)
        lead = np.zeros(int(span_ends[(src.path, src.member)] * SR), np.float32)
        # a wav body under a .ogg name decodes the same (FFmpeg probes the content)
        body = wav_bytes(np.concatenate([lead + 0.01 * noise(k, len(lead) / SR)[: len(lead)], noise(k, 3.3)]))
        if src.member is not None:
            archives.setdefault(path, []).append((src.member, body))
        elif not path.exists():
            path.write_bytes(body)
    for path, members in archives.items():
        with zipfile.ZipFile(path, "w") as z:
            for member, body in dict(members).items():
                z.writestr(member, body)
    # OpenSFX: a catalogue with 73 samples
    entries = [(f"Sample {i}. By Someone {i}. License: CC0.", wav_bytes(noise(100 + i, 1.5))) for i in range(73)]
    cat = root / S.OPENSFX / S.OPENSFX_CAT
    cat.parent.mkdir(parents=True, exist_ok=True)
    cat.write_bytes(catalogue_bytes(entries))
    for i, photo in enumerate(S.PHOTOS):
        folder = root / S.WALLPAPERS / photo.folder
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


def test_sources_give_every_class_five_training_sources_and_a_held_out_source():
    assert S.CLASSES == ("rain", "birds", "night", "wind", "engine", "fire")
    assert sorted(S.WALK_ORDER) == sorted(S.CLASSES)
    names = [s.name for s in S.SOUNDS]
    assert len(names) == len(set(names))
    assert all(s.use in S.USES and s.why and s.package in S.PACKAGES for s in S.SOUNDS)
    # packages reserved for an independent check are never read
    assert not any(p.startswith(("wesnoth", "warzone2100")) for p in S.packages())
    for label in S.CLASSES:
        train = S.sources_of(label, "train")
        assert len(train) >= 5, (label, train)
        # held-out sources: declared, at least one, never trained on in the class
        assert S.sources_of(label, "heldout-source") == list(S.HELDOUT_SOURCES[label]), label
        assert not set(S.HELDOUT_SOURCES[label]) & set(train), label
        # same-source held out: spans/files of training sources
        assert S.sounds_of(label, "heldout") and set(S.sources_of(label, "heldout")) <= set(train), label
    # a file used for both training and held out is split into disjoint spans
    key = lambda s: (s.package, s.path, s.member, s.cat_index)  # noqa: E731
    for held_src in (s for s in S.SOUNDS if s.use != "train"):
        for train_src in (s for s in S.SOUNDS if s.use == "train" and key(s) == key(held_src)):
            assert train_src.end is not None and train_src.end <= held_src.start
    # duplicates across packages are used once
    used = {s.file for s in S.SOUNDS}
    assert not used & set(S.NOT_USED)


def test_source_shares_cap_a_long_source():
    def rec(package: str, seconds: float) -> Recording:
        src = S.SoundSource(package, "rain", package, "x.ogg", "train", "why", "credit", "CC0")
        return Recording(src, np.zeros(int(seconds * SAMPLE_RATE), np.float32), "credit")

    shares = source_shares([rec("a", 400), rec("b", 10), rec("c", 10), rec("d", 5), rec("e", 5)])
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["a"] == pytest.approx(0.4) and shares["b"] > shares["d"] > 0
    # too few sources to cap: equal shares
    assert source_shares([rec("a", 400), rec("b", 4)]) == {"a": 0.5, "b": 0.5}


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


def test_loop_and_normalise():
    x = np.sin(np.linspace(0, 20, 1000)).astype(np.float32)
    looped = loop_to(x, 3500, 100)
    assert len(looped) == 3500 and np.abs(np.diff(looped)).max() < 0.1  # crossfaded joins, no clicks
    y = normalise(0.01 * noise(5, 1.0))
    assert abs(20 * np.log10(np.sqrt(np.mean(y**2))) + 20) < 0.1


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
    assert means["night"].mean() < 0.2 and means["night"][2] > means["night"][0]
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


def test_split_keeps_held_out_sources_out_of_training(built):
    import csv

    rows = list(csv.DictReader(open(built / "clips" / "SOURCES.csv", encoding="utf-8")))
    by_name = {s.name: s for s in S.SOUNDS}
    holdout = {line for line in (built / "clips" / "HOLDOUT.txt").read_text().splitlines() if not line.startswith("#")}
    assert {r["clip"] for r in rows} == {p.relative_to(built / "clips").as_posix() for p in (built / "clips").rglob("*.mp4")}
    for row in rows:
        src = by_name[row["sound"]]
        assert (row["class"], row["source"], row["use"]) == (src.label, src.package, src.use), row
        assert (row["clip"] in holdout) == (row["use"] != "train"), row
    for label in S.CLASSES:
        trained_on = {r["source"] for r in rows if r["class"] == label and r["use"] == "train"}
        held_sources = {r["source"] for r in rows if r["class"] == label and r["use"] == "heldout-source"}
        assert held_sources and not held_sources & trained_on, label
        assert any(r["class"] == label and r["use"] == "heldout" for r in rows), label
    manifest = list(csv.DictReader(open(built / "manifest.csv", encoding="utf-8")))
    clips = {r["file"].removeprefix("clips/"): r for r in manifest if r["file"].startswith("clips/")}
    assert {(k, v["source"], v["use"]) for k, v in clips.items()} == {(r["clip"], r["source"], r["use"]) for r in rows}


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
        for key in ("file", "package", "licence", "credit", "class", "use", "why"):
            assert item[key], (key, item)
        assert item["use"] in S.USES and item["class"] in S.CLASSES
    sounds = {(i["file"], i["span"], i["why"]) for i in items if i["kind"] == "sound"}
    for src in S.SOUNDS:
        assert (src.file, src.span_text, src.why) in sounds
    member = next(i for i in items if i["file"].endswith("public.zip!audio/ambient/weather/rain_12.ogg"))
    assert member["package"] == "0ad-data" and member["licence"] == "CC-BY-SA-3.0" and "steady" not in member["credit"]
    for label in S.CLASSES:
        info = credits["per_class"][label]
        assert info["heldout_sources"] == list(S.HELDOUT_SOURCES[label]) and len(info["train_sources"]) >= 5
    sfx = next(i for i in items if i["file"].endswith("opensfx.cat#52"))
    assert sfx["credit"] == "Sample 52. By Someone 52. License: CC0."  # the catalogue's own text
    photo = next(i for i in items if i["kind"] == "image" and "/Path/" in i["file"])
    assert "Photographer" in photo["credit"] and photo["licence"] == "LGPLv3" and photo["images"] > 0
    md = (built / "CREDITS.md").read_text(encoding="utf-8")
    assert "autumn/sounds/rain.ogg" in md and "winter_forest/sounds/wind.ogg" in md
    assert "why in its class" in md and S.SOUNDS[0].why in md


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
    assert main(["data", "demo", str(tmp_path / "out"), "--source-root", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "0ad-data" in err and "megaglest-data" in err and "plasma-workspace-wallpapers" in err
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


# --- fetching packages into the cache ----------------------------------------------------------------


def make_deb(folder: Path, package: str, files: dict[str, bytes]) -> Path:
    """A real .deb of `package` (dpkg-deb --build) holding `files` at their installed paths."""
    tree = folder / f"{package}-tree"
    for rel, body in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(body)
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\n"
                                             "Maintainer: test <t@example.org>\nDescription: test package\n")
    deb = folder / f"{package}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return deb


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian's package tool)")
def test_cache_extracts_only_the_used_files_from_a_deb(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    used = "usr/share/games/x/sounds/rain.ogg"
    make_deb(cache / "debs", "x-data", {used: b"rain", "usr/share/games/x/big.bin": b"0" * 10000,
                                        "usr/share/wallpapers/W/metadata.json": b"{}",
                                        "usr/share/wallpapers/W/contents/images/1x1.png": b"png"})
    monkeypatch.setattr(S, "packages", lambda: ["x-data"])
    monkeypatch.setattr(S, "files_of", lambda pkg: [used, "usr/share/wallpapers/W/contents/images/"])
    assert packages.missing_files(cache, "x-data") == [used, "usr/share/wallpapers/W/contents/images/"]
    assert packages.resolve_root(None, str(cache), log=lambda m: None) == cache
    assert (cache / "x-data" / used).read_bytes() == b"rain"
    assert (cache / "x-data/usr/share/wallpapers/W/contents/images/1x1.png").read_bytes() == b"png"
    assert not (cache / "x-data/usr/share/games/x/big.bin").exists()
    assert not (cache / "x-data/usr/share/wallpapers/W/metadata.json").exists()
    # a package that lacks an expected file: one line naming the .deb and the file
    monkeypatch.setattr(S, "files_of", lambda pkg: [used, "usr/share/games/x/sounds/nothere.ogg"])
    with pytest.raises(SoundvjError, match=r"x-data_1.0-1_all.deb: does not hold the expected files") as info:
        packages.ensure_cache(cache, log=lambda m: None)
    assert "\n" not in str(info.value)


def test_cache_without_the_deb_or_apt_get_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "packages", lambda: ["x-data"])
    monkeypatch.setattr(S, "files_of", lambda pkg: ["usr/share/x.ogg"])
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no apt-get on PATH
    with pytest.raises(SoundvjError, match=r"package x-data is not in .*debs and apt-get is not available"):
        packages.resolve_root(None, str(tmp_path / "cache"), log=lambda m: None)
