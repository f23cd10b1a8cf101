"""`soundvj data demo DIR`: build the demo set into `DIR.partial`, then rename it to `DIR`.

Layout written (see the package docstring for the classes):

* `images/<class>/<class>-NNNN.png` — generator training images, `size` px;
* `clips/<class>/<class>-train-NNN.mp4` — training clips with sound (`data.kind: video`);
  `clips/<class>/<class>-heldout-<name>-N.mp4` — held-out spans/files of training sources and
  `clips/<class>/<class>-hsource-<name>-N.mp4` — clips of the held-out sources (packages the class
  never trains on); both are listed in `clips/HOLDOUT.txt` (which `training.data.datasets` reads as
  the exact held-out split), and `clips/SOURCES.csv` gives every clip's class, source and use
  (`train`, `heldout`, `heldout-source`: what `soundvj eval --by-source` splits by);
* `heldout_audio/<class>/<name>.wav` — each held-out recording whole (its chosen span);
* `demo_walk.wav` + `demo_walk.txt` — a soundscape through the six classes from the held-out
  sources' recordings (sources no training clip comes from);
* `credits.json`, `CREDITS.md` — every file with package, licence, credit, class, use and why it is
  in its class; `manifest.csv` — every written clip and image with the source and look it came from.

Every random choice comes from a generator seeded by (seed, what, class, index), so a set is a pure
function of its settings and the packages' files. A DIR holding a complete set (its `credits.json`)
is left alone unless `--force`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import SoundvjError
from training.data.clip_sources import SOURCES_LIST
from training.data.demo import sources as S
from training.data.demo.images import Photo, class_look, load_photos
from training.data.demo.packages import resolve_root
from training.data.demo.sounds import (
    SAMPLE_RATE,
    cut_training_clip,
    demo_walk,
    load_recording,
    source_shares,
    split_heldout,
    write_wav,
)

COMPLETE_MARKER = "credits.json"  # written last: its presence means the set is whole
FORMAT_VERSION = 2  # 2: many sources per class, held-out sources, clips/SOURCES.csv
HELDOUT_USES = ("heldout", "heldout-source")
CLIP_TAG = {"heldout": "heldout", "heldout-source": "hsource"}  # in held-out clip file names


@dataclass(frozen=True)
class DemoSettings:
    size: int = 64
    images_per_class: int = 600
    clips_per_class: int = 96
    clip_seconds: float = 4.0
    fps: float = 24.0
    seed: int = 0
    source_root: str | None = None  # a tree with one folder per package (tests); None: the package cache
    package_cache: str | None = None  # None: packages.DEFAULT_CACHE
    walk_seconds: float = 7.0  # per class in the demo walk
    walk_fade: float = 1.0

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 1024 or self.size % 2:
            raise SoundvjError(f"--size {self.size}: expected an even number of pixels in 16 .. 1024")
        if not 0 <= self.images_per_class <= 100000:
            raise SoundvjError(f"--images-per-class {self.images_per_class}: expected 0 .. 100000")
        if not 1 <= self.clips_per_class <= 10000:
            raise SoundvjError(f"--clips-per-class {self.clips_per_class}: expected 1 .. 10000")
        if not 1.0 <= self.clip_seconds <= 60:
            raise SoundvjError(f"--clip-seconds {self.clip_seconds:g}: expected 1 .. 60")
        if not 1 <= self.fps <= 120:
            raise SoundvjError(f"--fps {self.fps:g}: expected 1 .. 120")
        if not 2.0 <= self.walk_seconds <= 60:
            raise SoundvjError(f"--walk-seconds {self.walk_seconds:g}: expected 2 .. 60")
        if not 0.0 < self.walk_fade < self.walk_seconds / 2:
            raise SoundvjError(f"walk_fade {self.walk_fade:g}: expected more than 0 and less than half of --walk-seconds")


def item_rng(seed: int, what: str, label: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{what}/{label}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# --- writing -----------------------------------------------------------------------------------------


def _save_png(path: Path, frame: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray((np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path, optimize=False)


# Lossless (x264 crf 0): at crf 18 the encoder gave other frames on most builds here (fire and rain at
# 64 px, from the first frame on), so the set was not a pure function of its seed and a stepper trained
# on a rebuilt set was another stepper. Costs about 6x the bytes (a 4 s 64 px clip: 22 kB -> 137 kB).
CLIP_CRF = 0


def _write_clip(path: Path, audio: np.ndarray, look: Callable[[float], np.ndarray], t0: float, settings: DemoSettings) -> None:
    from core.video_writer import Mp4Writer  # PyAV: optional in core, needed only to write clips

    frames = max(1, int(round(len(audio) / SAMPLE_RATE * settings.fps)))
    with Mp4Writer(path, settings.fps, settings.size, settings.size, audio=audio[None], sample_rate=SAMPLE_RATE,
                   crf=CLIP_CRF) as writer:
        for k in range(frames):
            writer.write((np.clip(look(t0 + k / settings.fps), 0, 1) * 255 + 0.5).astype(np.uint8))


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@dataclass
class BuildResult:
    out_dir: Path
    images: int
    train_clips: int
    heldout_clips: int
    seconds: float
    bytes: int
    already_complete: bool = False


def build(out_dir: str | Path, settings: DemoSettings, force: bool = False,
          log: Callable[[str], None] = lambda m: print(m, file=sys.stderr), show_progress: bool = False) -> BuildResult:
    """Write the demo set to `out_dir` (see the module docstring)."""
    out = Path(out_dir)
    if out.exists() and not force:
        if (out / COMPLETE_MARKER).is_file():
            return BuildResult(out, 0, 0, 0, 0.0, 0, already_complete=True)
        raise SoundvjError(f"{out}: exists and is not a complete demo set; choose another DIR or pass --force to replace it")
    started = time.monotonic()
    root = resolve_root(settings.source_root, settings.package_cache, log)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        partial.mkdir(parents=True)
    except OSError as e:
        raise SoundvjError(f"{partial}: cannot create the folder ({e.strerror or e})") from None

    cache: dict = {}
    recordings = {use: {label: [load_recording(s, root, cache) for s in S.sounds_of(label, use)] for label in S.CLASSES}
                  for use in S.USES}
    photos = load_photos(root / S.WALLPAPERS, S.CLASSES)
    manifest: list[dict] = []
    from tqdm import tqdm

    total = settings.images_per_class * len(S.CLASSES) + settings.clips_per_class * len(S.CLASSES)
    bar = tqdm(total=total, unit="item", desc="data demo", disable=not show_progress, file=sys.stderr)
    counts = {"images": 0, "train": 0, "heldout": 0, "heldout-source": 0}
    look_origins: dict[tuple[str, str], int] = {}
    for label in S.CLASSES:
        folder = partial / "images" / label
        folder.mkdir(parents=True)
        for i in range(settings.images_per_class):
            rng = item_rng(settings.seed, "image", label, i)
            look, origin = class_look(label, rng, settings.size, photos)
            path = folder / f"{label}-{i:04d}.png"
            _save_png(path, look(float(rng.uniform(0, 20))))
            manifest.append({"file": str(path.relative_to(partial)), "class": label, "use": "train", "look": origin,
                             "source": "", "sound": "", "start": "", "speed": ""})
            look_origins[(label, origin)] = look_origins.get((label, origin), 0) + 1
            counts["images"] += 1
            bar.update(1)

    holdout_lines = []
    clip_sources: list[dict] = []  # clips/SOURCES.csv
    train_seconds: dict[tuple[str, str], float] = {}  # (class, source) -> seconds of training clips
    for label in S.CLASSES:
        folder = partial / "clips" / label
        folder.mkdir(parents=True)
        shares = source_shares(recordings["train"][label])
        for i in range(settings.clips_per_class):
            rng = item_rng(settings.seed, "clip", label, i)
            audio, rec, start, speed = cut_training_clip(recordings["train"][label], rng, settings.clip_seconds, shares)
            look, origin = class_look(label, rng, settings.size, photos)
            path = folder / f"{label}-train-{i:03d}.mp4"
            _write_clip(path, audio, look, float(rng.uniform(0, 20)), settings)
            manifest.append({"file": str(path.relative_to(partial)), "class": label, "use": "train", "look": origin,
                             "source": rec.source.package, "sound": rec.source.name, "start": f"{start:.3f}",
                             "speed": f"{speed:g}"})
            clip_sources.append({"clip": f"{label}/{path.name}", "class": label, "source": rec.source.package,
                                 "use": "train", "sound": rec.source.name})
            key = (label, rec.source.package)
            train_seconds[key] = train_seconds.get(key, 0.0) + settings.clip_seconds
            counts["train"] += 1
            bar.update(1)
        for use in HELDOUT_USES:
            for rec in recordings[use][label]:
                write_wav(partial / "heldout_audio" / label / f"{rec.source.name}.wav", rec.samples)
                for k, (start, audio) in enumerate(split_heldout(rec, settings.clip_seconds)):
                    rng = item_rng(settings.seed, f"heldout/{rec.source.name}", label, k)
                    look, origin = class_look(label, rng, settings.size, photos)
                    path = folder / f"{label}-{CLIP_TAG[use]}-{rec.source.name}-{k}.mp4"
                    _write_clip(path, audio, look, float(rng.uniform(0, 20)), settings)
                    holdout_lines.append(f"{label}/{path.name}")
                    manifest.append({"file": str(path.relative_to(partial)), "class": label, "use": use, "look": origin,
                                     "source": rec.source.package, "sound": rec.source.name,
                                     "start": f"{rec.source.start + start:.3f}", "speed": "1"})
                    clip_sources.append({"clip": f"{label}/{path.name}", "class": label, "source": rec.source.package,
                                         "use": use, "sound": rec.source.name})
                    counts[use] += 1
    bar.close()
    (partial / "clips" / "HOLDOUT.txt").write_text(
        "# held-out clips (never trained on), one <class>/<file> per line; see ../CREDITS.md\n"
        + "\n".join(holdout_lines) + "\n", encoding="utf-8")
    with open(partial / "clips" / SOURCES_LIST, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["clip", "class", "source", "use", "sound"])
        writer.writeheader()
        writer.writerows(clip_sources)

    walk, starts = demo_walk(recordings["heldout-source"], S.WALK_ORDER, settings.walk_seconds, settings.walk_fade)
    write_wav(partial / "demo_walk.wav", walk)
    (partial / "demo_walk.txt").write_text(
        "# start_seconds class  (each class's held-out sources' recordings; a start is the middle of the crossfade into it)\n"
        + "".join(f"{t:.2f} {label}\n" for t, label in starts)
        + f"# total {len(walk) / SAMPLE_RATE:.2f} s\n", encoding="utf-8")

    with open(partial / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "class", "use", "look", "source", "sound", "start", "speed"])
        writer.writeheader()
        writer.writerows(manifest)
    credits = credits_list(recordings, photos, look_origins, counts, train_seconds, root, settings)
    (partial / "CREDITS.md").write_text(credits_markdown(credits, holdout_lines, starts), encoding="utf-8")
    (partial / COMPLETE_MARKER).write_text(json.dumps(credits, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    _fsync_tree(partial)

    if out.exists():  # --force: swap, then remove the old set
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old)
    else:
        os.replace(partial, out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return BuildResult(out, counts["images"], counts["train"], counts["heldout"] + counts["heldout-source"],
                       time.monotonic() - started, size)


# --- credits -----------------------------------------------------------------------------------------


def _wallpaper_metadata(folder: Path) -> tuple[str, str, str]:
    """(title, author, licence) as the wallpaper's metadata.json (or metadata.desktop) states them."""
    meta = folder / "metadata.json"
    if meta.is_file():
        try:
            plugin = json.loads(meta.read_text(encoding="utf-8")).get("KPlugin", {})
        except (OSError, ValueError) as e:
            raise SoundvjError(f"{meta}: cannot be read as JSON ({e})") from None
        authors = ", ".join(a.get("Name", "") for a in plugin.get("Authors", []) if a.get("Name"))
        return plugin.get("Name", folder.name), authors or "unknown", plugin.get("License", "unknown")
    return folder.name, "unknown", "unknown"


def credits_list(recordings: dict, photos: dict[str, list[Photo]], look_origins: dict, counts: dict,
                 train_seconds: dict[tuple[str, str], float], root: Path, settings: DemoSettings) -> dict:
    """The machine-readable credits: every file with package, licence, credit, class, use and why."""
    items = []
    for use in S.USES:
        for label in S.CLASSES:
            for rec in recordings[use][label]:
                src = rec.source
                items.append({"kind": "sound", "file": src.file, "span": src.span_text, "package": src.package,
                              "licence": src.licence, "credit": rec.credit, "class": label, "use": use,
                              "why": src.why, "seconds": round(rec.seconds, 2)})
    for label in S.CLASSES:
        for photo in photos[label]:
            title, author, licence = _wallpaper_metadata(root / S.WALLPAPERS / photo.source.folder)
            items.append({"kind": "image", "file": "/" + str(photo.file.relative_to(root / S.WALLPAPERS)), "span": "",
                          "package": S.WALLPAPERS, "licence": licence,
                          "credit": f"\"{title}\" by {author}", "class": label, "use": "train",
                          "why": photo.source.note, "images": look_origins.get((label, photo.source.wallpaper), 0)})
        procedural = look_origins.get((label, "procedural"), 0)
        if procedural:
            items.append({"kind": "image", "file": "procedural", "span": "", "package": "soundvj",
                          "licence": "same as soundvj", "credit": f"soundvj procedural scene: {S.LOOKS[label]}",
                          "class": label, "use": "train", "why": "no package ships this look", "images": procedural})
    per_class = {}
    for label in S.CLASSES:
        per_class[label] = {
            "train_sources": S.sources_of(label, "train"),
            "heldout_sources": S.sources_of(label, "heldout-source"),
            "train_clip_seconds": {pkg: round(sec, 1) for (lab, pkg), sec in sorted(train_seconds.items()) if lab == label},
            "recording_seconds": {use: round(sum(r.seconds for r in recordings[use][label]), 1) for use in S.USES},
        }
    return {
        "dataset": "soundvj demo set (soundvj data demo)",
        "format": FORMAT_VERSION,
        "settings": asdict(settings),
        "classes": {label: S.LOOKS[label] for label in S.CLASSES},
        "counts": {"images": counts["images"], "train_clips": counts["train"], "heldout_clips": counts["heldout"],
                   "heldout_source_clips": counts["heldout-source"]},
        "per_class": per_class,
        "packages": {pkg: f"{info.licence}; {info.note}" for pkg, info in S.PACKAGES.items()
                     if pkg in S.packages()},
        "not_used": S.NOT_USED,
        "sources": items,
    }


def credits_markdown(credits: dict, holdout_lines: list[str], starts: list[tuple[float, str]]) -> str:
    lines = ["# Credits and licences of the soundvj demo set", "",
             "Built by `soundvj data demo` from Debian packages. Classes and looks:", ""]
    lines += [f"- **{label}**: {look}" for label, look in credits["classes"].items()]
    lines += ["", "## Sources per class", "", "| class | training sources (seconds of training clips) | held-out sources |",
              "|---|---|---|"]
    for label, info in credits["per_class"].items():
        train = ", ".join(f"{pkg} ({sec:g} s)" for pkg, sec in info["train_clip_seconds"].items())
        lines.append(f"| {label} | {train} | {', '.join(info['heldout_sources'])} |")
    lines += ["", "## Packages", ""]
    lines += [f"- `{pkg}`: {note}" for pkg, note in credits["packages"].items()]
    lines += ["", "## Held out (never trained on)", "",
              "`heldout-source`: a package the class never trains on; `heldout`: a span or file of a training source.", ""]
    for item in credits["sources"]:
        if item["use"] in HELDOUT_USES:
            span = f" ({item['span']})" if item["span"] else ""
            lines.append(f"- {item['class']}, {item['use']}: `{item['file']}`{span} ({item['package']}), {item['seconds']} s")
    lines += ["", "Not used: " + "; ".join(f"`{k}` ({v})" for k, v in credits["not_used"].items()), "",
              "Held-out clips: `clips/HOLDOUT.txt`; every clip's source and use: `clips/SOURCES.csv`; whole recordings: "
              "`heldout_audio/`; the demo walk (`demo_walk.wav`, from the held-out sources) starts: "
              + ", ".join(f"{label} {t:.1f} s" for t, label in starts) + ".", "",
              "## Files", "", "| class | use | kind | file | package | licence | credit | why in its class |",
              "|---|---|---|---|---|---|---|---|"]
    for item in credits["sources"]:
        span = f" ({item['span']})" if item["span"] else ""
        cells = [str(item[k]).replace("|", "\\|") for k in ("credit", "why")]
        lines.append(f"| {item['class']} | {item['use']} | {item['kind']} | `{item['file']}`{span} | {item['package']} "
                     f"| {item['licence']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


# --- command -----------------------------------------------------------------------------------------


def run_cli(args: argparse.Namespace) -> int:
    """`soundvj data demo DIR ...` (arguments defined in training.cli)."""
    settings = DemoSettings(size=args.size, images_per_class=args.images_per_class, clips_per_class=args.clips_per_class,
                            clip_seconds=args.clip_seconds, fps=args.fps, seed=args.seed, source_root=args.source_root,
                            package_cache=args.package_cache, walk_seconds=args.walk_seconds)
    result = build(args.dir, settings, force=args.force, show_progress=not args.quiet and sys.stderr.isatty())
    if result.already_complete:
        print(f"{result.out_dir}: already a complete demo set (pass --force to rebuild it)")
        return 0
    print(f"wrote {result.out_dir}: {result.images} images, {result.train_clips} training and {result.heldout_clips} "
          f"held-out clips ({len(S.CLASSES)} classes: {', '.join(S.CLASSES)}), {result.bytes / 1e6:.1f} MB "
          f"in {result.seconds:.0f} s")
    return 0
