"""`soundvj train classifier` (real images only) and `soundvj eval --classifier`."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from core.cli import main
from core.errors import SoundvjError
from training.stages.classifier import ImageClassifier, classes_from_state, trained_classifier

CLASSES = ("rain", "hum", "chirps", "crackle", "wind")  # training.data.synth's classes


def _image_folder(root, size=32, clips=4, seed=0):
    """A folder per class of real frames from the procedural clips (every 3rd frame)."""
    from PIL import Image

    from training.data.synth import SynthSettings, make_clip

    settings = SynthSettings(clips_per_class=clips, seconds=1.0, size=size, fps=12.0, seed=seed)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(clips):
            _, frames = make_clip(name, i, settings)
            for t in range(0, frames.shape[0], 3):
                Image.fromarray(frames[t]).save(root / name / f"{i}-{t}.png")
    return root


def test_class_names_ride_inside_the_module():
    model = ImageClassifier(["fire", "rain", "wind"], width=8)
    assert classes_from_state(model.state_dict()) == ["fire", "rain", "wind"]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_classifier_learns_real_classes_and_judges_frames(tmp_path):
    images = _image_folder(tmp_path / "images")
    run = tmp_path / "run"
    code = main(["train", "classifier", "--data", str(images), "--out", str(run), "--set", "loop.steps=80",
                 "--set", "loop.batch_size=16", "--set", "loop.sample_every=80", "--set", "loop.progress=false",
                 "--set", "stage.resolution=32", "--set", "stage.width=8", "--set", "stage.holdout_every=4"])
    assert code == 0
    rows = list(csv.DictReader(open(run / "samples" / "classifier_val.csv")))
    accuracy = float(rows[-1]["val_accuracy"])
    assert accuracy >= 0.6, rows  # chance is 0.2; these classes differ in colour and layout
    model = trained_classifier(run)
    assert model.classes == sorted(CLASSES)
    # A real held-back image of each class is judged by the loaded model as the trained one did.
    from training.data.images import load_image

    picks = [sorted((images / c).iterdir())[3] for c in model.classes]
    batch = torch.stack([load_image(p, 32) for p in picks]).float() / 127.5 - 1  # uint8 -> [-1, 1]
    assert (model(batch).argmax(dim=1) == torch.arange(len(picks))).float().mean() >= 0.6


def test_classifier_refuses_a_flat_folder(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "flat").mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / "flat" / f"{i}.png")
    code = main(["train", "classifier", "--data", str(tmp_path / "flat"), "--out", str(tmp_path / "run"),
                 "--set", "loop.steps=2"])
    err = capsys.readouterr().err
    assert code == 2 and "needs a folder per class" in err and "Traceback" not in err


pytest.importorskip("open_clip", reason="open_clip_torch is in the train extra (pip install -e '.[train]')")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from tests.training_chain import build_chain

    return build_chain(tmp_path_factory.getbasetemp() / "training_chain")


def test_eval_with_a_classifier_adds_its_accuracy(chain, tmp_path, capsys):
    from training.evaluation.evaluate import evaluate, format_table, summary_rows
    from training.export import export_model

    images = _image_folder(tmp_path / "images", size=32, clips=3)
    run = tmp_path / "classifier"
    assert main(["train", "classifier", "--data", str(images), "--out", str(run), "--set", "loop.steps=20",
                 "--set", "loop.batch_size=8", "--set", "loop.progress=false", "--set", "stage.resolution=32",
                 "--set", "stage.width=8"]) == 0
    model = export_model(tmp_path / "m.safetensors", [chain / "stepper"])
    data = ["data.fps=8", "data.window_seconds=0.5", "data.holdout_fraction=0.34", "data.max_seconds=1.0"]
    rows = evaluate(model, chain / "data", str(chain / "clip"), data, device="cpu", classifier=run)
    for row in rows:
        assert row.classifier_accuracy is not None and 0.0 <= row.classifier_accuracy <= 1.0
    assert "classifier_acc" in format_table(rows) and len(summary_rows(rows)) == 2
    plain = evaluate(model, chain / "data", str(chain / "clip"), data, device="cpu")
    assert all(r.classifier_accuracy is None for r in plain) and "classifier_acc" not in format_table(plain)

    other = _image_folder(tmp_path / "other", size=32, clips=1)
    (other / "wind").rename(other / "gale")
    run2 = tmp_path / "classifier2"
    assert main(["train", "classifier", "--data", str(other), "--out", str(run2), "--set", "loop.steps=2",
                 "--set", "loop.batch_size=4", "--set", "loop.progress=false", "--set", "stage.resolution=32",
                 "--set", "stage.width=8"]) == 0
    with pytest.raises(SoundvjError, match=r"not the data's \['wind'\]"):
        evaluate(model, chain / "data", str(chain / "clip"), data, device="cpu", classifier=run2)
