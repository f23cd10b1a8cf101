"""Sound models whose E_A and E_I are heads over the pretrained sound embedding, through the whole
chain: the stages train them (and resume bitwise), the export writes a model file without the
embedding's weights, and the model renders, replays the same frames live and offline, and is judged
by eval."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("open_clip", reason="open_clip_torch is in the train extra (pip install -e '.[train]')")

from tests.training_chain import CHAIN_STEPS, assert_same_state, build_chain, run_stage  # noqa: E402

pytestmark = pytest.mark.slow  # trains three stages (about a minute and a half)

HEADS = ["stage.backbone=embedding", "stage.head_hidden=16"]


@pytest.fixture(scope="session")
def embedding_chain(tmp_path_factory):
    """The tiny chain's data, generator and CLIP, with E_A, E_I and the stepper trained over the embedding."""
    base = build_chain(tmp_path_factory.getbasetemp() / "training_chain")
    root = tmp_path_factory.getbasetemp() / "embedding_chain"
    for name in ("data", "tiny-generator.safetensors", "clip"):
        if not (root / name).exists():
            root.mkdir(parents=True, exist_ok=True)
            (root / name).symlink_to(base / name)
    run_stage("audio-encoder", root, root / "audio-encoder", HEADS)
    run_stage("inverter", root, root / "inverter", HEADS)
    run_stage("stepper", root, root / "stepper")
    return root


def _load(path):
    from training.loop import load_checkpoint

    return load_checkpoint(path)


def test_heads_train_and_resume_bitwise(embedding_chain, tmp_path):
    full = _load(embedding_chain / "inverter")
    assert full["step"] == CHAIN_STEPS
    assert set(full["modules"]["inversion_encoder"]) == {"norm.weight", "norm.bias", "hidden.weight", "hidden.bias",
                                                         "out.weight", "out.bias", "w_avg"}
    run_stage("inverter", embedding_chain, tmp_path / "run", HEADS + [f"loop.steps={CHAIN_STEPS // 2}"])
    run_stage("inverter", embedding_chain, tmp_path / "run", HEADS, resume=True)
    resumed = _load(tmp_path / "run")
    assert_same_state(full["modules"], resumed["modules"], "modules")
    assert_same_state(full["optimizers"], resumed["optimizers"], "optimizers")


def test_inverter_refuses_another_backbone_than_its_audio_encoder(embedding_chain, tmp_path):
    from core.errors import SoundvjError

    with pytest.raises(SoundvjError, match="stage.backbone: expected 'embedding'"):
        run_stage("inverter", embedding_chain, tmp_path / "run")


def test_exported_model_keeps_no_embedding_weights_and_plays_the_same_live_and_offline(embedding_chain, tmp_path):
    from safetensors import safe_open

    from core.model import load_model
    from core.params import Params
    from core.pipeline import FramePipeline
    from core.sound.sound_embedding import MEL
    from training.export import export_model

    out = export_model(tmp_path / "model.safetensors", [embedding_chain / "stepper", embedding_chain / "clip"])
    with safe_open(str(out), "pt") as f:
        sound_keys = [k for k in f.keys() if k.startswith("sound.")]
    assert sound_keys and not [k for k in sound_keys if "blocks." in k or "net." in k]
    model = load_model(out, device="cpu")
    assert not model.sound_is_seeded and model.mel_config == MEL
    assert model.sound.config.uses_sound_embedding
    windows = torch.rand(20, MEL.n_mels, 21)
    offline = FramePipeline(model, Params(fps=8.0, window_seconds=0.5)).step_batch(windows)
    live = FramePipeline(model, Params(fps=8.0, window_seconds=0.5))
    live.embed_in_background(True)
    try:
        frames = torch.stack([live.step(w) for w in windows])
    finally:
        live.close()
    assert frames.shape == (20, 3, 32, 32) and torch.isfinite(frames).all()
    assert (frames - offline).abs().max().item() < 1e-3


def test_eval_judges_a_model_with_embedding_heads(embedding_chain, tmp_path):
    from training.evaluation.evaluate import evaluate
    from training.export import export_model

    out = export_model(tmp_path / "model.safetensors", [embedding_chain / "stepper", embedding_chain / "clip"])
    rows = evaluate(out, embedding_chain / "data", embedding_chain / "clip",
                    overrides=["data.fps=8", "data.window_seconds=0.5", "data.min_seconds=1.0",
                               "data.holdout_fraction=0.34"])
    from training.evaluation.evaluate import ALL_CLIPS, BASELINE, TRAINED

    summaries = {r.models: r for r in rows if r.clip == ALL_CLIPS}
    assert set(summaries) == {TRAINED, BASELINE}  # the baseline's seeded models hear the same 96-band windows
    assert summaries[TRAINED].frames == summaries[BASELINE].frames > 0
    assert all(0.0 <= r.zero_shot_accuracy <= 1.0 for r in rows)


def test_inverter_learns_kinds_of_scene_and_resumes_bitwise(embedding_chain, tmp_path):
    """With stage.prototypes set to the data's class count, E_I's state gains the linear choice of kind and
    one scene per kind, the cross-entropy of that choice is logged, and a resumed run repeats exactly."""
    kinds = HEADS + ["stage.prototypes=5", "stage.lr_kind=5e-3"]
    run_stage("inverter", embedding_chain, tmp_path / "full", kinds)
    full = _load(tmp_path / "full")
    state = full["modules"]["inversion_encoder"]
    assert state["kind.weight"].shape == (5, 512) and state["scenes"].shape[0] == 5
    assert "loss/kind" in (tmp_path / "full" / "scalars.csv").read_text()
    run_stage("inverter", embedding_chain, tmp_path / "run", kinds + [f"loop.steps={CHAIN_STEPS // 2}"])
    run_stage("inverter", embedding_chain, tmp_path / "run", kinds, resume=True)
    assert_same_state(full["modules"], _load(tmp_path / "run")["modules"], "modules")


def test_inverter_refuses_a_kind_count_other_than_the_class_count(embedding_chain, tmp_path):
    from core.errors import SoundvjError

    with pytest.raises(SoundvjError, match="stage.prototypes: expected the data's class count 5"):
        run_stage("inverter", embedding_chain, tmp_path / "run", HEADS + ["stage.prototypes=3"])


def test_a_fitted_choice_of_kind_stays_fixed_while_the_rest_of_the_inverter_learns(embedding_chain, tmp_path):
    """With stage.kind_fit_steps, E_I's choice of kind is the read-out fitted on every training window
    before the loop (the same as fitting it directly), the LayerNorm it reads stays at rest, no
    cross-entropy of the choice is trained, the rest of E_I still learns, and a resumed run repeats."""
    from training.read_out import ReadOutFit, fit_read_out

    fitted = HEADS + ["stage.prototypes=5", "stage.kind_fit_steps=60"]
    run_stage("inverter", embedding_chain, tmp_path / "full", fitted)
    state = _load(tmp_path / "full")["modules"]["inversion_encoder"]
    assert torch.equal(state["norm.weight"], torch.ones(512)) and torch.equal(state["norm.bias"], torch.zeros(512))
    assert "loss/kind" not in (tmp_path / "full" / "scalars.csv").read_text()

    run_stage("inverter", embedding_chain, tmp_path / "half", fitted + [f"loop.steps={CHAIN_STEPS // 2}"])
    half = _load(tmp_path / "half")["modules"]["inversion_encoder"]
    assert torch.equal(half["kind.weight"], state["kind.weight"]) and torch.equal(half["kind.bias"], state["kind.bias"])
    assert not torch.equal(half["out.weight"], state["out.weight"])  # the head around the choice trained on

    # The stage's choice is the read-out of its training windows, fitted from the loop's seed.
    from core.sound.sound_embedding import MEL
    from training.config import load_run_config
    from training.data.stage_datasets import open_stage_datasets
    from training.stages.inverter import Config, training_window_embeddings
    from tests.training_chain import stage_overrides

    run = load_run_config("inverter", Config, None, stage_overrides("inverter", embedding_chain) + fitted)
    dataset, _ = open_stage_datasets(run, 32, need_frames=False, verbose=False, mel=MEL)
    embeddings, labels, groups = training_window_embeddings(dataset, run.data.path, torch.device("cpu"))
    assert groups is None and len(embeddings) == len(dataset)  # the chain's data lists no sources
    direct = fit_read_out(embeddings, labels, 5, None, ReadOutFit(steps=60, seed=run.loop.seed))
    assert torch.allclose(direct.weight, state["kind.weight"], atol=1e-6)
    called = torch.nn.functional.layer_norm(embeddings, (512,)) @ state["kind.weight"].T + state["kind.bias"]
    assert (called.argmax(dim=1) == labels).float().mean() > 0.6  # five procedural kinds: chance is 0.2

    run_stage("inverter", embedding_chain, tmp_path / "half", fitted, resume=True)
    assert_same_state(_load(tmp_path / "full")["modules"], _load(tmp_path / "half")["modules"], "modules")


def test_fitting_the_choice_of_kind_needs_kinds_of_scene(embedding_chain, tmp_path):
    from core.errors import SoundvjError

    with pytest.raises(SoundvjError, match="stage.kind_fit_steps: .* set stage.prototypes"):
        run_stage("inverter", embedding_chain, tmp_path / "run", HEADS + ["stage.kind_fit_steps=10"])


def test_a_fit_that_cannot_move_is_refused_by_its_setting(embedding_chain, tmp_path):
    """A zero learning rate would leave the choice of kind at its random start; the error names the setting."""
    from core.errors import SoundvjError

    with pytest.raises(SoundvjError, match=r"stage.kind_fit_lr: expected a value >= 1e-09, got 0"):
        run_stage("inverter", embedding_chain, tmp_path / "run",
                  HEADS + ["stage.prototypes=5", "stage.kind_fit_steps=10", "stage.kind_fit_lr=0"])
