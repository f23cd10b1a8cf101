"""The linear read-out E_I's choice of kind and the folds over sources are fitted with."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.errors import SoundvjError
from training.read_out import ReadOutFit, fit_read_out, group_weights


def test_every_class_weighs_the_same_and_within_it_every_source():
    labels = torch.tensor([0] * 90 + [0] * 10 + [1] * 5)
    groups = ["big"] * 90 + ["small"] * 10 + ["only"] * 5
    w = group_weights(labels, groups)
    assert w.sum().item() == pytest.approx(1.0)
    assert w[:90].sum().item() == pytest.approx(0.25) and w[90:100].sum().item() == pytest.approx(0.25)
    assert w[100:].sum().item() == pytest.approx(0.5)
    no_groups = group_weights(labels, None)
    assert no_groups[:100].sum().item() == pytest.approx(0.5) and no_groups[100:].sum().item() == pytest.approx(0.5)
    with pytest.raises(SoundvjError, match="3 groups for 105 windows"):
        group_weights(labels, ["a", "b", "c"])


def _kinds(n: int = 600, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Three kinds: each a direction in 512-d plus noise, at random loudness (which layer_norm removes)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 512, generator=g)
    labels = torch.arange(n) % 3
    x = centres[labels] + 1.5 * torch.randn(n, 512, generator=g)
    return x * (0.1 + 10 * torch.rand(n, 1, generator=g)), labels


def test_the_fit_tells_kinds_apart_on_windows_it_never_saw_and_repeats_from_its_seed():
    x, labels = _kinds()
    state = torch.random.get_rng_state()
    layer = fit_read_out(x[:450], labels[:450], 3, fit=ReadOutFit(steps=150, batch=64))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left as it was
    called = layer(F.layer_norm(x[450:], (512,))).argmax(dim=1)
    assert (called == labels[450:]).float().mean() > 0.9
    again = fit_read_out(x[:450], labels[:450], 3, fit=ReadOutFit(steps=150, batch=64))
    assert torch.equal(again.weight, layer.weight) and torch.equal(again.bias, layer.bias)
    other = fit_read_out(x[:450], labels[:450], 3, fit=ReadOutFit(steps=150, batch=64, seed=1))
    assert not torch.equal(other.weight, layer.weight)


def test_a_small_source_of_a_class_is_heard_when_sources_weigh_the_same():
    """Class 0 has a big source and a small one that sounds like neither class's big source; weighing
    windows alike lets the big sources decide, weighing sources alike keeps the small one in its class."""
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(512, generator=g) for _ in range(3))
    small = 0.6 * b + 0.8 * c  # nearer class 1's sound than class 0's
    x = torch.cat([a + torch.randn(400, 512, generator=g), small + torch.randn(8, 512, generator=g),
                   b + torch.randn(400, 512, generator=g)])
    labels = torch.tensor([0] * 408 + [1] * 400)
    groups = ["a"] * 400 + ["small"] * 8 + ["b"] * 400
    test = F.layer_norm(small + torch.randn(200, 512, generator=g), (512,))
    fit = ReadOutFit(steps=300, batch=128)
    by_source = (fit_read_out(x, labels, 2, groups, fit)(test).argmax(dim=1) == 0).float().mean()
    by_window = (fit_read_out(x, labels, 2, None, fit)(test).argmax(dim=1) == 0).float().mean()
    assert by_source > 0.9 and by_source > by_window


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps and batch must be >= 1"),
    (dict(batch=0), "steps and batch must be >= 1"),
    (dict(lr=0.0), "expected lr > 0"),
    (dict(noise=-1.0), "noise >= 0"),
])
def test_bad_fit_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(SoundvjError, match=match):
        ReadOutFit(**kwargs)


def test_embeddings_and_labels_must_agree():
    with pytest.raises(SoundvjError, match=r"expected embeddings \[N, D\] and N labels"):
        fit_read_out(torch.zeros(4, 512), torch.zeros(3, dtype=torch.int64), 2)
