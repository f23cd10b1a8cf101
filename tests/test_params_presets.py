"""The parameter registry, the Params value object, CLI flags and YAML presets."""

import argparse
import dataclasses
import math
from pathlib import Path

import pytest
import yaml

import core.presets as presets_mod
from core.errors import SoundvjError
from core.params import (
    NAMES,
    PARAMS,
    Params,
    add_cli_arguments,
    params_from_cli,
    params_markdown_table,
    spec,
)
from core.presets import SHIPPED_DIR, Preset, list_presets, load_preset, save_preset

SHIPPED = ("calm", "flowing", "storm", "pulse")


@pytest.fixture(autouse=True)
def _no_user_presets(monkeypatch):
    # A developer's own SOUNDVJ_PRESETS_DIR must not change what these tests see.
    monkeypatch.delenv(presets_mod.USER_DIR_ENV, raising=False)


def write(tmp_path: Path, text: str, name: str = "look.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# --- registry and Params -------------------------------------------------------------------------

def test_registry_and_dataclass_agree():
    fields = dataclasses.fields(Params)
    assert [f.name for f in fields] == [s.name for s in PARAMS]
    assert {f.name: f.default for f in fields} == {s.name: s.default for s in PARAMS}
    assert len(set(NAMES)) == len(NAMES)


def test_defaults_are_valid_and_in_range():
    p = Params()
    for s in PARAMS:
        v = getattr(p, s.name)
        if v is None:
            assert s.nullable
        else:
            assert s.minimum <= v <= s.maximum
            assert type(v) is (int if s.kind == "int" else float)


def test_method_doc_values():
    p = Params()
    assert (p.alpha, p.noise, p.psi, p.seed, p.fps, p.window_seconds) == (0.4, 0.3, 0.7, 0, 24.0, 1.0)
    assert spec("seed").maximum == 2**31 - 1
    assert {s.name for s in PARAMS if not s.live} == {"fps", "seed"}
    assert {s.name for s in PARAMS if s.nullable} == {"alpha_coarse", "alpha_middle", "alpha_fine"}


def test_spec_unknown_name_suggests():
    with pytest.raises(SoundvjError, match="did you mean 'alpha'"):
        spec("alpah")


def test_coercion():
    p = Params(alpha=1, seed=7.0, fps=30)
    assert type(p.alpha) is float and p.alpha == 1.0
    assert type(p.seed) is int and p.seed == 7
    assert type(p.fps) is float


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"alpha": True}, "alpha = True"),
        ({"seed": False}, "seed = False"),
        ({"noise": math.nan}, "finite"),
        ({"psi": math.inf}, "finite"),
        ({"alpha": "0.5"}, "must be a number"),
        ({"alpha": None}, "not null"),
        ({"seed": 1.5}, "whole number"),
        ({"seed": -1}, "[0, 2147483647]"),
        ({"alpha": 1.01}, "[0, 1]"),
        ({"gain_db": -40.5}, "[-40, 40]"),
    ],
)
def test_params_rejects_bad_values(changes, fragment):
    with pytest.raises(SoundvjError) as err:
        Params(**changes)
    assert fragment in one_line(err)


def test_replace_validates_and_rejects_unknown():
    p = Params()
    assert p.replace(alpha=0.9).alpha == 0.9
    assert p.alpha == 0.4  # unchanged original
    with pytest.raises(SoundvjError, match="unknown parameter 'nosie'.*did you mean 'noise'"):
        p.replace(nosie=0.5)
    with pytest.raises(SoundvjError, match=r"\[0, 2\]"):
        p.replace(noise=3.0)


def test_from_mapping_names_source():
    p = Params.from_mapping({"alpha": 0.2, "seed": 5}, source="ui-state.json")
    assert (p.alpha, p.seed, p.noise) == (0.2, 5, 0.3)
    with pytest.raises(SoundvjError) as err:
        Params.from_mapping({"psi": 9}, source="ui-state.json")
    assert one_line(err).startswith("ui-state.json: psi = 9")
    assert Params.from_mapping(Params(noise=1.0).to_dict()) == Params(noise=1.0)


def test_alphas_fallback():
    assert Params(alpha=0.5).alphas() == (0.5, 0.5, 0.5)
    assert Params(alpha=0.5, alpha_fine=0.9).alphas() == (0.5, 0.5, 0.9)
    assert Params(alpha=0.5, alpha_coarse=0.0, alpha_middle=0.1).alphas() == (0.0, 0.1, 0.5)


def test_diff_and_affects_reset():
    a = Params()
    assert a.diff(a) == {} and not a.affects_reset(a)
    b = a.replace(alpha=0.8, psi=1.0, pan_x=0.5, gain_db=6)
    assert b.diff(a) == {"alpha": (0.8, 0.4), "psi": (1.0, 0.7), "pan_x": (0.5, 0.0), "gain_db": (6.0, 0.0)}
    assert not a.affects_reset(b)
    assert not a.affects_reset(a.replace(window_seconds=0.5))  # the windower re-slices its mel history
    for name, value in (("fps", 30), ("seed", 1)):
        assert a.affects_reset(a.replace(**{name: value})), name


# --- CLI -----------------------------------------------------------------------------------------

def make_parser(names=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_cli_arguments(parser, names)
    return parser


def test_cli_only_given_flags_override():
    base = Params(alpha=0.1, noise=1.5, fps=30)
    args = make_parser().parse_args(["--noise", "0.2", "--window-seconds", "2", "--seed", "9"])
    p = params_from_cli(args, base)
    assert p.diff(base) == {"noise": (0.2, 1.5), "window_seconds": (2.0, 1.0), "seed": (9, 0)}
    assert params_from_cli(make_parser().parse_args([]), base) == base


def test_cli_nullable_and_subset():
    args = make_parser(["alpha", "alpha_fine"]).parse_args(["--alpha-fine", "none"])
    assert params_from_cli(args, Params(alpha_fine=0.9)).alpha_fine is None
    with pytest.raises((SystemExit, argparse.ArgumentError)):
        make_parser(["alpha"]).parse_args(["--noise", "1"])


def test_cli_range_error_names_flag():
    args = make_parser().parse_args(["--psi", "2"])
    with pytest.raises(SoundvjError) as err:
        params_from_cli(args, Params())
    assert one_line(err) == "command line: --psi = 2.0: out of range; allowed [0, 1.5]"


def test_cli_help_mentions_range_and_default():
    help_text = " ".join(make_parser().format_help().split())
    assert "--window-seconds" in help_text and "[0.1, 4] s; default 1" in help_text
    assert "--alpha-coarse" in help_text and "none = use alpha" in help_text


# --- presets -------------------------------------------------------------------------------------

def test_every_shipped_preset_loads_and_is_distinct():
    loaded = {name: load_preset(name) for name in SHIPPED}
    applied = {}
    for name, preset in loaded.items():
        assert preset.name == name and preset.path == SHIPPED_DIR / f"{name}.yaml"
        assert preset.description and "\n" not in preset.description
        applied[name] = preset.apply(Params())
        assert applied[name] != Params(), name
    assert len(set(applied.values())) == len(SHIPPED)
    assert {p.name for p in list_presets()} == set(SHIPPED)


def test_storm_and_calm_look_as_described():
    calm, storm = load_preset("calm").apply(Params()), load_preset("storm").apply(Params())
    assert calm.alpha < 0.2 and calm.noise < Params().noise and calm.psi <= 0.6
    assert storm.alpha >= 0.7 and storm.noise > 0.5 and storm.psi >= 0.9
    coarse, _, fine = storm.alphas()
    assert fine > coarse


def test_preset_changes_only_its_keys():
    base = Params(alpha=0.9, noise=1.9, psi=0.2, seed=42, rotate_deg=45, pan_y=-0.5, gain_db=-12, fps=60)
    preset = load_preset("storm")
    out = preset.apply(base)
    changed = base.diff(out)
    assert set(changed) == set(preset.values) - {k for k, v in preset.values.items() if getattr(base, k) == v}
    for name in set(NAMES) - set(preset.values):
        assert getattr(out, name) == getattr(base, name), name


def test_load_by_path_and_name_defaults_to_stem(tmp_path):
    path = write(tmp_path, "version: 1\nparams:\n  alpha_middle: 0.6\n  seed: 3\n", "my-look.yaml")
    preset = load_preset(str(path))
    assert preset.name == "my-look" and preset.description == ""
    assert preset.values == {"alpha_middle": 0.6, "seed": 3}
    assert load_preset(path) == preset


def test_user_folder_searched_first(tmp_path, monkeypatch):
    write(tmp_path, "version: 1\ndescription: mine\nparams: {noise: 2}\n", "storm.yaml")
    monkeypatch.setenv(presets_mod.USER_DIR_ENV, str(tmp_path))
    assert load_preset("storm").description == "mine"
    names = [p.name for p in list_presets()]
    assert names.count("storm") == 1 and "calm" in names


def test_missing_bare_name_lists_available():
    with pytest.raises(SoundvjError) as err:
        load_preset("strom")
    msg = one_line(err)
    assert "'strom'" in msg and "did you mean 'storm'" in msg
    with pytest.raises(SoundvjError) as err:
        load_preset("zzzzzz")
    assert all(name in one_line(err) for name in SHIPPED)


def test_missing_path(tmp_path):
    with pytest.raises(SoundvjError, match="no such preset file"):
        load_preset(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("params: {alpha: 0.5}\n", ["missing 'version'", "supported versions: 1"]),
        ("version: 3\nparams: {}\n", ["version 3 is not supported", "supported versions: 1, 2"]),
        ("version: true\n", ["version True is not supported"]),
        ("version: '1'\n", ["version '1' is not supported"]),
        ("- version: 1\n", ["top level must be a mapping", "list"]),
        ("", ["empty"]),
        ("version: 1\nparms: {alpha: 0.5}\n", ["unknown top-level key 'parms'", "did you mean 'params'"]),
        ("version: 1\nalpha: 0.5\n", ["'alpha' is a parameter", "under 'params:'"]),
        ("version: 1\nparams: [0.5]\n", ["'params' must be a mapping"]),
        ("version: 1\nparams:\n  alpah: 0.5\n", ["unknown parameter 'alpah'", "did you mean 'alpha'"]),
        ("version: 1\nparams:\n  alpha: 1.5\n", ["alpha = 1.5", "out of range", "[0, 1]"]),
        ("version: 1\nparams:\n  psi: -0.1\n", ["psi = -0.1", "[0, 1.5]"]),
        ("version: 1\nparams:\n  noise: yes\n", ["noise = True", "must be a number"]),
        ("version: 1\nparams:\n  noise: .nan\n", ["noise = nan", "finite"]),
        ("version: 1\nparams:\n  alpha: high\n", ["alpha = 'high'", "not str"]),
        ("version: 1\nparams:\n  seed: 2.5\n", ["seed = 2.5", "whole number"]),
        ("version: 1\nparams:\n  alpha_coarse: fast\n", ["or null (null = use alpha)"]),
        ("version: 1\nname: 5\n", ["name must be a non-empty string"]),
        ("version: 1\ndescription: [a]\n", ["description must be a string"]),
    ],
)
def test_preset_errors_name_file_and_key(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(SoundvjError) as err:
        load_preset(path)
    msg = one_line(err)
    assert msg.startswith(str(path) + ":"), msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_invalid_yaml_reports_line(tmp_path):
    path = write(tmp_path, "version: 1\nparams:\n  alpha: [0.5\n  noise: 1\n")
    with pytest.raises(SoundvjError) as err:
        load_preset(path)
    msg = one_line(err)
    assert msg.startswith(f"{path}: invalid YAML at line ") and "column" in msg


def test_null_alpha_in_preset_means_fallback(tmp_path):
    preset = load_preset(write(tmp_path, "version: 1\nparams: {alpha_fine: null, alpha: 0.6}\n"))
    assert preset.apply(Params(alpha_fine=0.9)).alphas() == (0.6, 0.6, 0.6)


def test_load_with_base_checks_and_returns_same_preset():
    assert load_preset("calm", base=Params(seed=3)) == load_preset("calm")


def test_preset_values_are_copied():
    values = {"alpha": 0.5}
    preset = Preset(name="x", values=values)
    values["alpha"] = 0.9
    assert preset.values == {"alpha": 0.5}
    with pytest.raises(SoundvjError, match="preset 'x': unknown parameter"):
        Preset(name="x", values={"bogus": 1})


# --- saving --------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    params = Params(alpha=0.123456789, alpha_middle=0.3, noise=1.25, seed=2**31 - 1, rotate_deg=-33.3, fps=29.97)
    path = save_preset(tmp_path / "mine.yaml", params, name="Mine", description="round trip: ok")
    assert [p.name for p in tmp_path.iterdir()] == ["mine.yaml"]  # no temp file left behind
    raw = yaml.safe_load(path.read_text())
    assert raw["version"] == 1 and list(raw["params"]) == list(NAMES)
    preset = load_preset(path)
    assert (preset.name, preset.description) == ("Mine", "round trip: ok")
    assert preset.apply(Params(seed=1, psi=0.1)) == params


def test_save_only_subset(tmp_path):
    path = save_preset(tmp_path / "sub.yaml", Params(noise=0.9, psi=1.1), only=["psi", "noise"])
    preset = load_preset(path)
    assert preset.name == "sub" and preset.values == {"noise": 0.9, "psi": 1.1}  # registry order
    with pytest.raises(SoundvjError, match="unknown parameter 'pis'.*did you mean 'psi'"):
        save_preset(tmp_path / "bad.yaml", Params(), only=["pis"])
    assert not (tmp_path / "bad.yaml").exists()


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = save_preset(tmp_path / "keep.yaml", Params(alpha=0.2))
    before = path.read_bytes()

    def half_written_dump(data, stream=None, **kwargs):
        stream.write("version: 1\nparams:\n  alph")  # a partial write, then the failure
        raise RuntimeError("disk full")

    monkeypatch.setattr(presets_mod.yaml, "safe_dump", half_written_dump)
    with pytest.raises(RuntimeError, match="disk full"):
        save_preset(path, Params(alpha=0.9))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.yaml"]


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(SoundvjError, match="does not exist"):
        save_preset(tmp_path / "no" / "x.yaml", Params())


# --- docs stay in sync ---------------------------------------------------------------------------

def test_readme_matches_registry_and_presets():
    readme = (SHIPPED_DIR / "README.md").read_text(encoding="utf-8")
    assert params_markdown_table() in readme  # regenerate the table if this fails
    for name in SHIPPED:
        assert load_preset(name).description in readme, name
