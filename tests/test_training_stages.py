"""The four training stages and the export, on a tiny chain (procedural clips, 32-px generator, tiny CLIP).

Each stage trains a few steps and writes a checkpoint; resuming it from the half-way checkpoint gives
bitwise the same modules and optimiser states as the uninterrupted run (CPU). The exported model file
loads and renders.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("open_clip", reason="open_clip_torch is in the train extra (pip install -e '.[train]')")

from core.errors import SoundvjError  # noqa: E402
from tests.training_chain import CHAIN_STEPS, STAGE_ORDER, assert_same_state, build_chain, run_stage  # noqa: E402


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    return build_chain(tmp_path_factory.getbasetemp() / "training_chain")


def _load(path):
    from training.loop import load_checkpoint

    return load_checkpoint(path)


@pytest.mark.parametrize("stage", STAGE_ORDER)
def test_stage_trains_and_resumes_bitwise(stage, chain, tmp_path):
    full = _load(chain / stage)
    assert full["step"] == CHAIN_STEPS and full["stage_name"] == stage
    losses = (chain / stage / "scalars.csv").read_text().splitlines()
    assert any(",loss/loss," in row for row in losses)

    half = CHAIN_STEPS // 2
    first = run_stage(stage, chain, tmp_path / "run", [f"loop.steps={half}"])
    assert first.step == half
    second = run_stage(stage, chain, tmp_path / "run", resume=True)
    assert second.step == CHAIN_STEPS
    resumed = _load(tmp_path / "run")
    assert_same_state(full["modules"], resumed["modules"], "modules")
    assert_same_state(full["optimizers"], resumed["optimizers"], "optimizers")
    assert_same_state(full["schedulers"], resumed["schedulers"], "schedulers")


def test_stages_write_sample_grids_and_videos(chain):
    from PIL import Image

    for stage, pattern in (("inverter", "inverter-*.png"), ("stepper", "stepper-*.png")):
        grids = sorted((chain / stage / "samples").glob(pattern))
        assert grids, stage
        with Image.open(grids[-1]) as img:
            width, height = img.size
        # One row per class (5 procedural classes) of 32-px frames with 2-px gaps.
        assert height == 5 * (32 + 2) + 2
        assert width >= 2 * (32 + 2) + 2
    import av

    videos = sorted((chain / "stepper" / "samples").glob(f"stepper-{CHAIN_STEPS:07d}-*.mp4"))
    assert [v.name.split("-")[-1] for v in videos] == ["chirps.mp4", "crackle.mp4", "hum.mp4", "rain.mp4", "wind.mp4"]
    with av.open(str(videos[0])) as container:
        kinds = sorted(stream.type for stream in container.streams)
        frames = sum(1 for _ in container.decode(video=0))
    assert kinds == ["audio", "video"] and frames == 12  # the whole 1.5-s held-out clip at 8 fps
    rows = (chain / "clip" / "samples" / "clip_holdout.csv").read_text().splitlines()
    assert rows[0] == "step,holdout_frames,zero_shot_accuracy,chance" and rows[-1].startswith(f"{CHAIN_STEPS},")


def test_export_writes_a_model_that_loads_and_renders(chain, tmp_path):
    from core.model import load_model
    from core.params import Params
    from core.pipeline import FramePipeline
    from training.export import export_model

    out = export_model(tmp_path / "model.safetensors", [chain / "stepper", chain / "clip"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    model = load_model(out, device="cpu")
    assert not model.sound_is_seeded
    stepper_state = _load(chain / "stepper")["modules"]["latent_stepper"]
    for key, value in stepper_state.items():
        assert torch.equal(model.sound.latent_stepper.state_dict()[key], value), key
    inverter_state = _load(chain / "inverter")["modules"]["inversion_encoder"]
    assert torch.equal(model.sound.inversion_encoder.state_dict()["styles.0.linear.weight"],
                       inverter_state["styles.0.linear.weight"])
    frames = FramePipeline(model, Params(fps=8.0, window_seconds=0.5)).step_batch(torch.rand(3, 128, 40))
    assert frames.shape == (3, 3, 32, 32) and torch.isfinite(frames).all()


def test_export_needs_a_stepper_run(chain, tmp_path):
    from training.export import export_model

    with pytest.raises(SoundvjError, match="is a `train stepper` run"):
        export_model(tmp_path / "m.safetensors", [chain / "inverter"])
    assert not list(tmp_path.iterdir())


def test_export_refuses_another_generator(chain, tmp_path):
    from training.export import export_model

    with pytest.raises(SoundvjError, match="trained for|num_ws|w_dim"):
        export_model(tmp_path / "m.safetensors", [chain / "stepper"], generator="default")
    assert not list(tmp_path.iterdir())


def test_stage_pointing_at_the_wrong_stage_is_one_line_error(chain, tmp_path):
    with pytest.raises(SoundvjError, match=r"stage.audio_encoder: .* is a checkpoint of `train clip`") as info:
        run_stage("inverter", chain, tmp_path / "run", [f"stage.audio_encoder={chain / 'clip'}"])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_stage_without_its_inputs_is_one_line_error(chain, tmp_path):
    with pytest.raises(SoundvjError, match="stage.inverter: expected the run folder"):
        run_stage("stepper", chain, tmp_path / "a", ["stage.inverter="])
    with pytest.raises(SoundvjError, match="clip.checkpoint: expected a CLIP checkpoint path"):
        run_stage("audio-encoder", chain, tmp_path / "b", ["stage.clip.checkpoint="])
    with pytest.raises(SoundvjError, match=r"clip.checkpoint: .*no such file"):
        run_stage("audio-encoder", chain, tmp_path / "c", [f"stage.clip.checkpoint={tmp_path / 'nope'}"])


def test_stages_check_their_data(chain, tmp_path):
    with pytest.raises(SoundvjError, match="data.clip_frames: `train stepper` trains on clips"):
        run_stage("stepper", chain, tmp_path / "a", ["data.clip_frames=1"])
    with pytest.raises(SoundvjError, match="data.kind: `train audio-encoder` pairs sounds with video frames"):
        run_stage("audio-encoder", chain, tmp_path / "b", ["data.kind=audio"])


def test_clip_of_another_embedding_size_is_an_error(chain, tmp_path):
    with pytest.raises(SoundvjError, match="stage.clip.embed_dim: the CLIP .* embeds in 16 dimensions"):
        run_stage("audio-encoder", chain, tmp_path / "a", ["stage.clip.embed_dim=32"])


def _spread_batch(stage_obj, size):
    """`size` items spread over the dataset (which is ordered by class), so the batch mixes classes."""
    from torch.utils.data import default_collate

    n = len(stage_obj.dataset)
    return default_collate([stage_obj.dataset[(i * n) // size] for i in range(size)])


def _step_context(stage_obj, step):
    from training.loop import StepContext

    return StepContext(step=step, total_steps=100, modules=stage_obj.modules, plain=stage_obj.modules,
                       device=torch.device("cpu"), rank=0, world_size=1, bf16=False)


# The inverter can only move a random 32-px generator's picture a little in the tiny CLIP's space
# (seen: 1.836 -> 1.801 in 12 steps), so its bar is an absolute drop; the contrastive stages overfit fast.
@pytest.mark.parametrize("stage, steps, fitted", [
    ("clip", 15, lambda first, last: last < 0.6 * first),
    ("audio-encoder", 15, lambda first, last: last < 0.8 * first),
    ("inverter", 12, lambda first, last: last < first - 0.02),
])
def test_stage_step_fits_a_repeated_batch(stage, steps, fitted, chain, tmp_path):
    """The gradients are wired: repeating one batch drives its loss down."""
    from training.config import load_run_config
    from training.loop import BuildContext
    from training.stages import stage_module
    from tests.training_chain import stage_overrides

    module = stage_module(stage)
    extra = ["stage.spec_augment=false"] if stage == "audio-encoder" else []
    config = load_run_config(stage, module.Config, None, stage_overrides(stage, chain) + extra)
    torch.manual_seed(0)
    built = module.build(config, BuildContext(torch.device("cpu"), 0, 1, tmp_path, True))
    for m in built.modules.values():
        m.train()
    batch = _spread_batch(built, 8)
    losses = [float(built.train_step(batch, _step_context(built, i))["loss"]) for i in range(steps)]
    assert fitted(losses[0], losses[-1]), losses


def test_stepper_step_trains_stepper_and_discriminators(chain, tmp_path):
    from training.config import load_run_config
    from training.loop import BuildContext
    from training.stages import stage_module
    from tests.training_chain import stage_overrides

    module = stage_module("stepper")
    config = load_run_config("stepper", module.Config, None, stage_overrides("stepper", chain))
    torch.manual_seed(0)
    built = module.build(config, BuildContext(torch.device("cpu"), 0, 1, tmp_path, True))
    assert set(built.modules) == {"latent_stepper", "image_discriminator", "video_discriminator"}
    before = {name: [p.detach().clone() for p in m.parameters()] for name, m in built.modules.items()}
    losses = built.train_step(_spread_batch(built, 2), _step_context(built, 0))
    assert {"loss", "adversarial", "enc", "discriminator", "zero_shot_accuracy", "frame_change"} <= set(losses)
    for name, m in built.modules.items():
        changed = any(not torch.equal(a, p) for a, p in zip(before[name], m.parameters()))
        assert changed, f"{name} did not move"
        assert all(p.requires_grad for p in m.parameters()), f"{name} left frozen after the step"


def test_stepper_conditional_discriminators_learn_per_class(chain, tmp_path):
    """stage.conditional_discriminators: D_I and D_V get a class embedding each, and a step trains it for the
    classes in the batch (they see the clip's labels on both the real and the generated side)."""
    from training.config import load_run_config
    from training.loop import BuildContext
    from training.stages import stage_module
    from tests.training_chain import stage_overrides

    module = stage_module("stepper")
    overrides = stage_overrides("stepper", chain) + ["stage.conditional_discriminators=true"]
    config = load_run_config("stepper", module.Config, None, overrides)
    torch.manual_seed(0)
    built = module.build(config, BuildContext(torch.device("cpu"), 0, 1, tmp_path, True))
    batch = _spread_batch(built, 2)
    in_batch = sorted(set(int(x) for x in batch["label"]))
    before = {name: built.modules[name].class_embed.weight.detach().clone()
              for name in ("image_discriminator", "video_discriminator")}
    losses = built.train_step(batch, _step_context(built, 0))
    assert torch.isfinite(losses["adversarial"]) and torch.isfinite(losses["discriminator"])
    for name, old in before.items():
        change = (built.modules[name].class_embed.weight.detach() - old).abs().amax(dim=1)
        # Adam moves a row with gradient by ~lr; AdamW's weight decay alone moves the others ~1000x less.
        moved = [c for c in range(old.shape[0]) if change[c] > 0.1 * config.stage.lr]
        assert moved == in_batch, (name, change, in_batch)


def test_cli_wrong_architecture_clip_exits_2_without_a_checkpoint(chain, tmp_path, capsys):
    """A CLIP state dict whose tensors do not fit the configured architecture: one line, exit 2."""
    from core.cli import main
    from tests.training_chain import stage_overrides

    state = _load(chain / "clip")["modules"]["clip"]
    plain = tmp_path / "tiny-clip-state.pt"
    torch.save({k[len("model."):]: v for k, v in state.items()}, plain)  # a bare state dict: no sizes in it
    run_dir = tmp_path / "run"
    overrides = stage_overrides("audio-encoder", chain) + [f"stage.clip.checkpoint={plain}"]  # default sizes
    argv = ["train", "audio-encoder", "--out", str(run_dir)] + [a for o in overrides for a in ("--set", o)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "not a CLIP of architecture 'small'" in err and err.strip().count("\n") == 0 and "Traceback" not in err
    assert not (run_dir / "checkpoint.pt").exists()


def _conditional_generator(root, classes):
    """The chain generator's sizes, class-conditional on `classes` (names in the model file's metadata)."""
    import json

    from core.model_file import save_model
    from core.stylegan3.networks import Generator

    torch.manual_seed(1)
    G = Generator(z_dim=32, c_dim=len(classes), w_dim=32, img_resolution=32, img_channels=3,
                  channel_base=512, channel_max=16, num_layers=4).eval()
    return save_model(root / "conditional.safetensors", G, metadata={"training.classes": json.dumps(list(classes))})


def test_stepper_class_latent_term_pulls_frames_to_their_class(chain, tmp_path):
    """lambda_class_w > 0: the stepper's frames are pulled toward their sound's class latent; repeating a
    batch lowers that distance (the term is wired into the stepper's loss)."""
    from training.config import load_run_config
    from training.loop import BuildContext
    from training.stages import stage_module
    from training.data.synth import CLASSES
    from tests.training_chain import stage_overrides

    generator = _conditional_generator(tmp_path, tuple(reversed(list(CLASSES))))  # another order than the data's
    module = stage_module("stepper")
    overrides = stage_overrides("stepper", chain) + [f"stage.generator={generator}", "stage.lambda_class_w=100",
                                                     "stage.class_latent_samples=64", "stage.noise_std=0",
                                                     "stage.lr=0.01"]
    config = load_run_config("stepper", module.Config, None, overrides)
    torch.manual_seed(0)
    built = module.build(config, BuildContext(torch.device("cpu"), 0, 1, tmp_path, True))
    batch = _spread_batch(built, 2)
    distances = []
    for i in range(8):
        torch.manual_seed(0)  # the same w_0 each step: only the stepper's weights change
        distances.append(float(built.train_step(batch, _step_context(built, i))["class_latent"]))
    assert distances[-1] < 0.8 * distances[0], distances


def test_stepper_class_latent_term_needs_a_conditional_generator(chain, tmp_path):
    with pytest.raises(SoundvjError, match="stage.lambda_class_w: .* is not a class-conditional generator"):
        run_stage("stepper", chain, tmp_path / "a", ["stage.lambda_class_w=1"])


def test_inverter_augments_only_what_its_encoder_hears(chain, tmp_path):
    """stage.spec_augment / stage.level_db alter E_I's input (the target E_A(window) is computed from the
    whole window); off, E_I hears the batch as it is."""
    from training.config import load_run_config
    from training.loop import BuildContext
    from training.stages import stage_module
    from tests.training_chain import stage_overrides

    module = stage_module("inverter")
    heard, clean = {}, {}
    for name, extra in (("off", []), ("masks", ["stage.spec_augment=true"]), ("level", ["stage.level_db=12"])):
        config = load_run_config("inverter", module.Config, None, stage_overrides("inverter", chain) + extra)
        torch.manual_seed(0)
        built = module.build(config, BuildContext(torch.device("cpu"), 0, 1, tmp_path / name, True))
        encoder = built.modules["inversion_encoder"]
        encoder.register_forward_pre_hook(lambda m, args, name=name: heard.__setitem__(name, args[0].clone()))
        batch = _spread_batch(built, 4)
        built.train_step(batch, _step_context(built, 0))
        clean[name] = batch["mel"][:, 0]
    assert torch.equal(heard["off"], clean["off"])
    # Masks only add silence: every changed value became 0, and some did.
    changed = heard["masks"] != clean["masks"]
    assert bool(changed.any()) and bool((heard["masks"][changed] == 0).all())
    # A level change moves every unclamped, non-floor value of a window by the same amount.
    moved, was = heard["level"], clean["level"]
    checked = 0
    for i in range(was.shape[0]):
        inside = (was[i] > 0) & (was[i] < 1) & (moved[i] > 0) & (moved[i] < 1)
        shift = (moved[i] - was[i])[inside]
        if shift.numel():  # a procedural window may be all floor and full scale
            assert float(shift.abs().max()) <= 12 / 80 + 1e-6 and float(shift.max() - shift.min()) < 1e-5
            checked += 1
    assert checked > 0
    assert float((moved - was).abs().max()) > 0.01


def test_inverter_with_augmentation_resumes_bitwise(chain, tmp_path):
    """The augmentation draws from the RNG the loop checkpoints, so a resumed run repeats the uninterrupted one."""
    from tests.training_chain import CHAIN_STEPS

    extra = ["stage.spec_augment=true", "stage.level_db=12"]
    run_stage("inverter", chain, tmp_path / "full", extra)
    run_stage("inverter", chain, tmp_path / "half", extra + [f"loop.steps={CHAIN_STEPS // 2}"])
    run_stage("inverter", chain, tmp_path / "half", extra, resume=True)
    full, resumed = _load(tmp_path / "full"), _load(tmp_path / "half")
    assert resumed["step"] == CHAIN_STEPS
    assert_same_state(full["modules"], resumed["modules"], "modules")
    assert_same_state(full["optimizers"], resumed["optimizers"], "optimizers")


def test_inverter_mixes_windows_of_the_same_class(chain, tmp_path, monkeypatch):
    """stage.mix_same_class=1: every window E_I hears is mixed with a window of another training item of its own
    class, and E_A's target is made from that same mix."""
    from training.config import load_run_config
    from training.loop import BuildContext
    from training.stages import inverter, stage_module
    from tests.training_chain import stage_overrides

    partners, target_inputs = [], []
    original_mix, original_encoder = inverter.mix_recordings, inverter.trained_audio_encoder

    def recording_mix(mel, other, top_db):
        partners.append(other.clone())
        return original_mix(mel, other, top_db)

    def recording_encoder(*args, **kwargs):
        encoder = original_encoder(*args, **kwargs)
        encoder.register_forward_pre_hook(lambda m, a: target_inputs.append(a[0].clone()))
        return encoder

    monkeypatch.setattr(inverter, "mix_recordings", recording_mix)
    monkeypatch.setattr(inverter, "trained_audio_encoder", recording_encoder)
    module = stage_module("inverter")
    config = load_run_config("inverter", module.Config, None, stage_overrides("inverter", chain) + ["stage.mix_same_class=1"])
    torch.manual_seed(0)
    built = module.build(config, BuildContext(torch.device("cpu"), 0, 1, tmp_path, True))
    heard = []
    built.modules["inversion_encoder"].register_forward_pre_hook(lambda m, a: heard.append(a[0].clone()))
    batch = _spread_batch(built, 4)
    built.train_step(batch, _step_context(built, 0))
    clean, labels = batch["mel"][:, 0], batch["label"]
    assert len(partners) == 1 and partners[0].shape == clean.shape  # all 4 windows mixed, in one call
    assert torch.equal(heard[0], target_inputs[-1]) and not torch.equal(heard[0], clean)
    dataset, checked = built.dataset, 0
    for row, label in zip(partners[0], labels.tolist()):
        found = {dataset.labels[dataset.items[k][0]] for k in range(len(dataset)) if torch.equal(dataset[k]["mel"][0], row)}
        assert found, "the partner is not a training window"
        if len(found) == 1:  # a procedural window (e.g. a quiet start) can be the same in several classes
            assert found == {label}, (found, label)
            checked += 1
    assert checked > 0


def test_stepper_delta_term_is_the_square_of_its_own_departure_from_the_inverter(chain, tmp_path):
    """stage.lambda_delta: the logged term is mean (w_tilde_t - E_I(window_t))^2, which is d_t^2; with a stepper whose
    d_t is zero it is zero, and training with it lowers it."""
    from training.config import load_run_config
    from training.loop import BuildContext
    from training.stages import stage_module
    from tests.training_chain import stage_overrides

    module = stage_module("stepper")
    overrides = stage_overrides("stepper", chain) + ["stage.lambda_delta=100000", "stage.noise_std=0", "stage.lr=0.001"]
    config = load_run_config("stepper", module.Config, None, overrides)
    torch.manual_seed(0)
    built = module.build(config, BuildContext(torch.device("cpu"), 0, 1, tmp_path / "a", True))
    batch = _spread_batch(built, 2)
    deltas = [float(built.train_step(batch, _step_context(built, i))["delta"]) for i in range(8)]
    assert deltas[0] > 0 and deltas[-1] < 0.5 * deltas[0], deltas

    stepper = built.modules["latent_stepper"]
    with torch.no_grad():
        for p in stepper.out_fc.parameters():
            p.zero_()  # d_t = 0: every proposal is E_I's latent itself
    assert float(built.train_step(batch, _step_context(built, 8))["delta"]) < 1e-10
    with pytest.raises(SoundvjError, match="stage.lambda_delta: needs stage.alpha > 0"):
        run_stage("stepper", chain, tmp_path / "b", ["stage.lambda_delta=1", "stage.alpha=0"])


def test_stepper_burn_in_leaves_the_state_a_longer_rollout_reaches():
    """burn_in over K frames, then a rollout from its (w, hidden), equals frames K.. of one rollout over all,
    noise draws included; without the hidden state it would not."""
    from core.sound import LatentStepper, LatentStepperConfig
    from training.stages.stepper import burn_in

    torch.manual_seed(0)
    stepper = LatentStepper(LatentStepperConfig(num_ws=3, w_dim=8, hidden=16, num_layers=2, embed_dim=4, noise_dim=5,
                                                delta_init_std=0.5))
    w0, w_hats, embeds = torch.randn(2, 3, 8), torch.randn(2, 9, 3, 8), torch.randn(2, 9, 4)
    with torch.no_grad():
        whole = stepper.rollout(w0, w_hats, embeds, 0.4, 0.3, torch.Generator().manual_seed(1))
        rng = torch.Generator().manual_seed(1)
        w, hidden = burn_in(stepper, w0, w_hats[:, :6], embeds[:, :6], 0.4, 0.3, rng)
        rest = stepper.rollout(w, w_hats[:, 6:], embeds[:, 6:], 0.4, 0.3, rng, hidden=hidden)
        assert torch.equal(w, whole[:, 5]) and hidden is not None
        torch.testing.assert_close(rest, whole[:, 6:], rtol=0, atol=1e-6)
        rng = torch.Generator().manual_seed(1)
        w, _ = burn_in(stepper, w0, w_hats[:, :6], embeds[:, :6], 0.4, 0.3, rng)
        forgot = stepper.rollout(w, w_hats[:, 6:], embeds[:, 6:], 0.4, 0.3, rng)
        assert not torch.allclose(forgot, whole[:, 6:], atol=1e-3)


def test_stepper_burn_in_trains_the_clip_from_the_state_its_windows_reached(chain, tmp_path):
    """stage.burn_in_frames=K: items hold K windows more; each step draws k in 0..K and the trained rollout starts
    from the state the k windows before the clip left (k = 0: the paper's fresh start); only the clip is drawn."""
    from training.config import load_run_config
    from training.loop import BuildContext
    from training.stages.audio_encoder import trained_audio_encoder
    from training.stages.inverter import trained_inversion_encoder
    from training.stages.pretrained import frozen_generator
    from training.stages import stage_module
    from training.stages.stepper import burn_in
    from tests.training_chain import stage_overrides

    module = stage_module("stepper")
    config = load_run_config("stepper", module.Config, None,
                             stage_overrides("stepper", chain) + ["stage.burn_in_frames=4"])
    torch.manual_seed(0)
    built = module.build(config, BuildContext(torch.device("cpu"), 0, 1, tmp_path, True))
    batch = _spread_batch(built, 2)
    assert batch["mel"].shape[1] == 3 + 4 and batch["frames"].shape[1] == 3 + 4
    G = frozen_generator(config.stage.generator, torch.device("cpu"))
    audio_encoder = trained_audio_encoder(config.stage.audio_encoder, "a", torch.device("cpu"))
    inverter = trained_inversion_encoder(config.stage.inverter, "i", G, torch.device("cpu"))
    stepper = built.modules["latent_stepper"]
    plain_forward, start, seen = stepper.forward, {}, []

    def checking_forward(w0, w_hats, embeds, *args, hidden=None):
        now = torch.get_rng_state()
        torch.set_rng_state(start["rng"])  # redo the step's draws: k, the first latent's z, the burn-in's noise
        k = int(torch.randint(0, 5, ()))
        with torch.no_grad():
            expected = G.mapping(torch.randn([2, G.z_dim]), torch.zeros([2, G.c_dim]))
            context = batch["mel"][:, 4 - k : 4].flatten(0, 1)
            if k:
                expected, expected_hidden = burn_in(
                    stepper, expected, inverter(context).view(2, k, G.num_ws, G.w_dim),
                    audio_encoder(context).view(2, k, -1), config.stage.alpha, config.stage.noise_std, None)
                torch.testing.assert_close(hidden, expected_hidden, rtol=0, atol=1e-6)
            else:
                assert hidden is None
        torch.testing.assert_close(w0, expected, rtol=0, atol=1e-6)
        assert w_hats.shape[1] == 3 and torch.equal(torch.get_rng_state(), now)
        seen.append(k)
        return plain_forward(w0, w_hats, embeds, *args, hidden=hidden)

    stepper.forward = checking_forward
    for i in range(10):
        start["rng"] = torch.get_rng_state()
        built.train_step(batch, _step_context(built, i))
    assert len(seen) == 10 and len(set(seen)) >= 3, seen


def test_stepper_burn_in_resumes_bitwise_and_needs_long_enough_clips(chain, tmp_path):
    from training.loop import load_checkpoint

    full = run_stage("stepper", chain, tmp_path / "full", ["stage.burn_in_frames=3"])
    run_stage("stepper", chain, tmp_path / "run", ["stage.burn_in_frames=3", "loop.steps=2"])
    run_stage("stepper", chain, tmp_path / "run", ["stage.burn_in_frames=3"], resume=True)
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "run")
    assert full.step == 4 and b["step"] == 4
    assert_same_state(a["modules"], b["modules"], "modules")
    assert_same_state(a["optimizers"], b["optimizers"], "optimizers")
    # The chain's clips are 12 frames: 3 + 10 do not fit in any.
    with pytest.raises(SoundvjError, match=r"stage.burn_in_frames 10"):
        run_stage("stepper", chain, tmp_path / "long", ["stage.burn_in_frames=10"])
