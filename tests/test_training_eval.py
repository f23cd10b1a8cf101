"""`soundvj eval` on the tiny trained chain: rows, CSV, determinism, baseline, bad input."""

from __future__ import annotations

import argparse
import csv
import math

import numpy as np

import pytest

pytest.importorskip("open_clip", reason="open_clip_torch is in the train extra (pip install -e '.[train]')")

from core.errors import SoundvjError  # noqa: E402
from tests.training_chain import build_chain  # noqa: E402

EVAL_DATA = ["data.fps=8", "data.window_seconds=0.5", "data.holdout_fraction=0.34", "data.max_seconds=1.0"]


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    return build_chain(tmp_path_factory.getbasetemp() / "training_chain")


@pytest.fixture(scope="session")
def exported(chain, tmp_path_factory):
    from training.export import export_model

    return export_model(tmp_path_factory.mktemp("eval") / "model.safetensors", [chain / "stepper"])


@pytest.fixture(scope="session")
def rows(chain, exported):
    from training.evaluation.evaluate import evaluate

    return evaluate(exported, chain / "data", str(chain / "clip"), EVAL_DATA, seed=0, device="cpu")


def test_eval_scores_every_held_out_clip_for_both_models(rows):
    from training.evaluation.evaluate import ALL_CLIPS, BASELINE, TRAINED

    per_clip = [r for r in rows if r.clip != ALL_CLIPS]
    summary = [r for r in rows if r.clip == ALL_CLIPS]
    assert [r.models for r in summary] == [TRAINED, BASELINE]
    # 3 clips per class, 0.34 held out -> 1 per class; 5 classes; 1 s at 8 fps -> 8 frames each.
    for name in (TRAINED, BASELINE):
        clips = [r for r in per_clip if r.models == name]
        assert len(clips) == 5 and sorted(r.label for r in clips) == ["chirps", "crackle", "hum", "rain", "wind"]
        assert all(r.frames == 8 for r in clips)
    for r in rows:
        assert -1.0 <= r.clip_cosine <= 1.0 and 0.0 <= r.zero_shot_accuracy <= 1.0 and r.frame_change >= 0.0
        assert math.isclose(r.chance, 0.2)
    for s in summary:
        clips = [r for r in per_clip if r.models == s.models]
        assert s.frames == 40
        assert math.isclose(s.zero_shot_accuracy, sum(r.zero_shot_accuracy for r in clips) / 5, abs_tol=1e-6)
        assert math.isclose(s.clip_cosine, sum(r.clip_cosine for r in clips) / 5, abs_tol=1e-5)
    # The trained stepper and the seeded stand-ins make different pictures.
    assert summary[0].frame_change != pytest.approx(summary[1].frame_change, rel=1e-3)


def test_eval_is_repeatable(rows, chain, exported):
    from training.evaluation.evaluate import evaluate

    again = evaluate(exported, chain / "data", str(chain / "clip"), EVAL_DATA, seed=0, device="cpu")
    assert again == rows


def test_eval_cli_prints_the_table_and_writes_the_csv(chain, exported, tmp_path, capsys):
    from training.evaluation.evaluate import run_cli

    out = tmp_path / "scores.csv"
    args = argparse.Namespace(model=str(exported), dataset=str(chain / "data"), clip=str(chain / "clip"),
                              csv=str(out), overrides=EVAL_DATA, device="cpu", seed=0)
    assert run_cli(args) == 0
    table = capsys.readouterr().out
    assert "trained" in table and "untrained baseline" in table and "chance" in table
    with open(out, newline="") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 12 and records[-1]["clip"] == "ALL" and records[-1]["models"] == "untrained baseline"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]  # no temp file left


def test_eval_bad_input_is_one_line_error(chain, exported):
    from training.evaluation.evaluate import evaluate

    with pytest.raises(SoundvjError, match="eval takes data settings only"):
        evaluate(exported, chain / "data", str(chain / "clip"), ["loop.steps=3"], device="cpu")
    # The embedded default's (seeded) audio encoder embeds in 512 dims, the tiny CLIP in 16.
    with pytest.raises(SoundvjError, match="--clip: the CLIP embeds in 16 dimensions") as info:
        evaluate("default", chain / "data", str(chain / "clip"), EVAL_DATA, device="cpu")
    assert "\n" not in str(info.value)


def test_eval_command_exits_2_on_bad_input(chain, exported, capsys):
    from core.cli import main

    code = main(["eval", str(exported), str(chain / "data"), "--clip", str(chain / "nope"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "clip.checkpoint" in err and "Traceback" not in err


def test_export_keeps_the_credits_and_info_shows_them(chain, tmp_path, capsys):
    import json

    from core.cli import main
    from core.model_file import read_model_file
    from training.export import export_model

    credits = [{"file": "/usr/share/x/rain.ogg", "package": "megaglest-data", "licence": "CC-BY-SA-3.0",
                "credit": "The Glest Team", "class": "rain", "use": "train"},
               {"file": "/usr/share/x/wind.ogg", "package": "megaglest-data", "licence": "CC-BY-SA-3.0",
                "credit": "The MegaGlest Team", "class": "wind", "use": "heldout"}]
    (tmp_path / "credits.json").write_text(json.dumps(credits))
    out = export_model(tmp_path / "m.safetensors", [chain / "stepper"], credits=tmp_path / "credits.json")
    assert json.loads(read_model_file(out).metadata["training.credits"]) == credits
    assert main(["info", str(out), "--credits"]) == 0
    text = capsys.readouterr().out
    assert "trained on:   2 files (1 heldout, 1 train)" in text and "2 from megaglest-data (CC-BY-SA-3.0)" in text
    assert "wind/heldout" in text and "The MegaGlest Team" in text

    (tmp_path / "bad.json").write_text("{not json")
    assert main(["train", "export", str(chain / "stepper"), "-o", str(tmp_path / "n.safetensors"),
                 "--credits", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "--credits" in err and "not JSON" in err and err.count("\n") == 1
    assert not (tmp_path / "n.safetensors").exists()


def test_eval_writes_a_contact_sheet_one_row_per_class(chain, exported, tmp_path, capsys):
    from PIL import Image

    from core.cli import main

    sheet = tmp_path / "sheet.png"
    code = main(["eval", str(exported), str(chain / "data"), "--clip", str(chain / "clip"), "--device", "cpu",
                 "--csv", str(tmp_path / "e.csv"), "--sheet", str(sheet), "--sheet-columns", "3",
                 *[x for item in EVAL_DATA for x in ("--set", item)]])
    assert code == 0, capsys.readouterr().err
    image = Image.open(sheet)
    # 5 classes of 32 px frames enlarged to 128 px, 2 px padding: 5 rows of 130 px + 2.
    assert image.height == 5 * 130 + 2 and image.width > 3 * 130
    pixels = np.asarray(image.convert("RGB")).astype(float)
    assert pixels[:, -3 * 130 :].std() > 5  # frames, not an empty grey grid
    assert main(["eval", str(exported), str(chain / "data"), "--clip", str(chain / "clip"),
                 "--sheet", str(sheet), "--sheet-columns", "0"]) == 2


def test_eval_confusion_counts_every_frame_and_agrees_with_the_accuracies(chain, exported, capsys):
    from training.evaluation.evaluate import evaluate, format_confusion

    confusion: dict = {}
    rows = evaluate(exported, chain / "data", str(chain / "clip"), EVAL_DATA, seed=0, device="cpu", confusion=confusion)
    counts, classes = confusion["clip"], confusion["classes"]
    assert counts.shape == (len(classes), len(classes)) and "classifier" not in confusion
    trained = [r for r in rows if r.models == "trained" and r.label]
    for i, name in enumerate(classes):
        mine = [r for r in trained if r.label == name]
        frames = sum(r.frames for r in mine)
        assert int(counts[i].sum()) == frames  # the trained model's frames only, each once
        hits = sum(r.zero_shot_accuracy * r.frames for r in mine)
        assert abs(int(counts[i, i]) - hits) < 1e-3, (name, counts[i], hits)
    text = format_confusion(confusion)
    assert text.startswith("zero-shot CLIP: what the frames") and all(c in text for c in classes)
    lines = text.splitlines()[2:]
    assert len(lines) == len(classes) and all(abs(sum(float(x) for x in line.split()[1:]) - 1) < 0.02 for line in lines)


def test_eval_parts_measure_each_part_of_the_chain(chain, exported, rows, tmp_path, capsys):
    """--parts: per clip, E_A's zero-shot on the sound and G(E_I) frames (no stepper) judged by the CLIP, recomputed
    here by hand for one clip; absent without --parts; the per-class block and the CLI print them."""
    import torch

    from core.model import load_model
    from training.models.clip import ClipConfig, build_clip
    from training.evaluation.evaluate import data_config, evaluate, evaluation_clips, format_parts, run_cli

    assert all(r.audio_zero_shot is None and r.inverter_zero_shot is None for r in rows)  # not asked for
    with_parts = evaluate(exported, chain / "data", str(chain / "clip"), EVAL_DATA, seed=0, device="cpu", parts=True)
    assert [(r.clip, r.zero_shot_accuracy) for r in with_parts] == [(r.clip, r.zero_shot_accuracy) for r in rows]
    trained = [r for r in with_parts if r.models == "trained"]
    assert all(r.audio_zero_shot is not None and r.inverter_zero_shot is not None for r in trained)
    assert all(r.inverter_classifier_accuracy is None for r in trained)  # no --classifier
    assert all(r.audio_zero_shot is None for r in with_parts if r.models != "trained")  # the seeded E_A is not in CLIP space

    model = load_model(exported, device="cpu")
    clip = build_clip(ClipConfig(checkpoint=str(chain / "clip"))).freeze()
    clips = evaluation_clips(data_config(chain / "data", EVAL_DATA))
    whole = clips.whole_clip(0)
    windows, label = whole["mel"], int(whole["label"])
    text = clip.encode_labels(list(clips.classes)).float()
    with torch.no_grad():
        audio = (model.sound.audio_encoder(windows).float() @ text.T).argmax(dim=1)
        frames = model.generator.synthesis(model.sound.inversion_encoder(windows), noise_mode="const", force_fp32=True)
        called = (clip.encode_images(frames.clamp(-1, 1)).float() @ text.T).argmax(dim=1)
    first = [r for r in with_parts if r.models == "trained"][0]
    assert first.clip == str(whole["path"])
    assert first.audio_zero_shot == pytest.approx(float((audio == label).float().mean()), abs=1e-6)
    assert first.inverter_zero_shot == pytest.approx(float((called == label).float().mean()), abs=1e-6)

    block = format_parts(with_parts).splitlines()
    classes = sorted({r.label for r in with_parts if r.models == "trained" and r.label})
    assert block[0].startswith("trained: where each class is kept") and len(block) == 2 + len(classes)
    for line, name in zip(block[2:], classes):
        values = [float(x) for x in line.split()[1:]]
        mine = [r for r in with_parts if r.models == "trained" and r.label == name]
        frames_zero_shot = sum(r.zero_shot_accuracy * r.frames for r in mine) / sum(r.frames for r in mine)
        assert line.split()[0] == name and len(values) == 3 and all(0 <= v <= 1 for v in values)
        assert values[-1] == pytest.approx(frames_zero_shot, abs=0.006)  # printed to 2 decimals

    args = argparse.Namespace(model=str(exported), dataset=str(chain / "data"), clip=str(chain / "clip"),
                              csv=str(tmp_path / "s.csv"), overrides=EVAL_DATA, device="cpu", seed=0, parts=True)
    assert run_cli(args) == 0
    assert "where each class is kept" in capsys.readouterr().out
    with open(tmp_path / "s.csv", newline="") as f:
        assert all((r["audio_zero_shot"] != "") == (r["models"] == "trained") for r in csv.DictReader(f))


def test_eval_timeline_splits_each_class_by_time_since_the_clip_began(chain, exported, rows, capsys, tmp_path):
    """--parts also counts, per class and span of frame indices (0-9, 10-29, 30+), the frames the CLIP calls right:
    the spans hold each clip's frames by index, and their sum is the class's frame-weighted zero-shot."""
    from training.evaluation.evaluate import TIME_SPANS, evaluate, format_timeline, run_cli

    timeline = {}
    again = evaluate(exported, chain / "data", str(chain / "clip"), EVAL_DATA, seed=0, device="cpu", parts=True,
                     timeline=timeline)
    trained = [r for r in again if r.models == "trained" and r.clip != "ALL"]
    assert sorted(timeline) == sorted({r.label for r in trained})
    for name, spans in timeline.items():
        mine = [r for r in trained if r.label == name]
        for i, (lo, hi) in enumerate(TIME_SPANS):
            assert spans[i, 2] == sum(max(0, min(r.frames, hi or r.frames) - lo) for r in mine)
        hits = sum(r.zero_shot_accuracy * r.frames for r in mine)
        assert float(spans[:, 0].sum()) == pytest.approx(hits, abs=1e-3)
        assert float(spans[:, 1].sum()) == 0  # no classifier
    text = format_timeline(timeline, judged=False).splitlines()
    assert text[0].startswith("trained: the frames' accuracy by time") and len(text) == 2 + len(timeline)
    assert text[1].split()[1:] == ["frames", "0-9", "frames", "10-29", "frames", "30+"]
    args = argparse.Namespace(model=str(exported), dataset=str(chain / "data"), clip=str(chain / "clip"),
                              csv=str(tmp_path / "t.csv"), overrides=EVAL_DATA, device="cpu", seed=0, parts=True)
    assert run_cli(args) == 0
    assert "by time since the clip began" in capsys.readouterr().out


@pytest.fixture(scope="session")
def by_source_data(chain, tmp_path_factory):
    """The chain's data with a demo-set style split: per class one clip of a held-out source, one
    same-source held-out clip, one training clip (HOLDOUT.txt and SOURCES.csv as `data demo` writes)."""
    import shutil

    data = tmp_path_factory.mktemp("by_source") / "clips"
    shutil.copytree(chain / "data", data, ignore=shutil.ignore_patterns(".*"))  # not the decode cache
    holdout, rows = [], ["clip,class,source,use,sound"]
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        clips = sorted(p.name for p in folder.iterdir() if p.suffix == ".mp4")
        for name, source, use in zip(clips, ("pkg-b", "pkg-a", "pkg-a"), ("heldout-source", "heldout", "train")):
            rows.append(f"{folder.name}/{name},{folder.name},{source},{use},{name}")
            if use != "train":
                holdout.append(f"{folder.name}/{name}")
    (data / "HOLDOUT.txt").write_text("\n".join(holdout) + "\n")
    (data / "SOURCES.csv").write_text("\n".join(rows) + "\n")
    return data


def test_eval_by_source_reports_held_out_sources_beside_same_source_clips(chain, exported, by_source_data, tmp_path,
                                                                        capsys):
    from core.cli import main
    from training.evaluation.evaluate import ALL_CLIPS, BASELINE, TRAINED

    out = tmp_path / "by_source.csv"
    code = main(["eval", str(exported), str(by_source_data), "--clip", str(chain / "clip"), "--device", "cpu",
                 "--csv", str(out), "--by-source", *[x for item in EVAL_DATA for x in ("--set", item)]])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "held-out sources" in printed.out and "same-source held out" in printed.out
    table = printed.out[printed.out.index("per class on clips of held-out sources"):].splitlines()
    classes = sorted(p.name for p in by_source_data.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [line.split()[0] for line in table[2:]] == classes + ["all", "class"]
    assert all(line.count("(1)") == 2 for line in table[2:-2]) and table[-2].count(f"({len(classes)})") == 2
    # the class mean weighs every class once: the mean of the per-class cells
    for column in (1, 3):  # zero-shot on held-out sources, on same-source held-out clips
        per_class = [float(line.split()[column]) for line in table[2:-2]]
        assert abs(float(table[-1].split()[column + 1]) - sum(per_class) / len(per_class)) <= 0.006
    with open(out, newline="") as f:
        records = list(csv.DictReader(f))
    per_clip = [r for r in records if r["clip"] != ALL_CLIPS]
    assert {(r["models"], r["split"]) for r in per_clip} == {(m, s) for m in (TRAINED, BASELINE)
                                                            for s in ("heldout-source", "heldout")}
    held_source_clips = {r["clip"].rsplit("/", 1)[-1] for r in per_clip if r["split"] == "heldout-source"}
    assert len(held_source_clips) == len(classes)
    summaries = [(r["models"], r["split"]) for r in records if r["clip"] == ALL_CLIPS]
    assert summaries == [(TRAINED, ""), (BASELINE, ""), (TRAINED, "heldout-source"), (TRAINED, "heldout"),
                         (BASELINE, "heldout-source"), (BASELINE, "heldout")]
    # each split's summary is its clips' frame-weighted mean
    for model in (TRAINED, BASELINE):
        for split in ("heldout-source", "heldout"):
            mine = [r for r in per_clip if r["models"] == model and r["split"] == split]
            summary = next(r for r in records if r["clip"] == ALL_CLIPS and (r["models"], r["split"]) == (model, split))
            expected = sum(float(r["zero_shot_accuracy"]) * int(r["frames"]) for r in mine) / sum(int(r["frames"]) for r in mine)
            assert math.isclose(float(summary["zero_shot_accuracy"]), expected, abs_tol=1e-5)


def test_eval_by_source_without_a_sources_list_is_a_one_line_error(chain, exported, capsys):
    from core.cli import main

    code = main(["eval", str(exported), str(chain / "data"), "--clip", str(chain / "clip"), "--device", "cpu",
                 "--by-source", *[x for item in EVAL_DATA for x in ("--set", item)]])
    err = capsys.readouterr().err
    assert code == 2 and "SOURCES.csv not found" in err and err.count("\n") == 1 and "Traceback" not in err


def test_by_source_contact_sheet_shows_only_the_held_out_sources(chain, exported, by_source_data):
    from training.evaluation.evaluate import evaluate

    kept: dict[str, list[torch.Tensor]] = {}
    rows = evaluate(exported, by_source_data, str(chain / "clip"), overrides=EVAL_DATA, device="cpu",
                    keep_frames=kept, by_source=True)
    source_frames: dict[str, int] = {}
    for r in rows:
        if r.clip != "ALL" and r.models == "trained" and r.split == "heldout-source":
            source_frames[r.label] = source_frames.get(r.label, 0) + r.frames
    assert {label: sum(f.shape[0] for f in frames) for label, frames in kept.items()} == source_frames
