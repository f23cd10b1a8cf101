"""A non-editable install works on its own: the installed copy, run from a folder outside the checkout,
renders the demo with a shipped preset, shows the live app's help and prints a training config.

This guards the package data (assets, presets, training configs and recipes, the C++ kernel source):
a file the program reads beside its modules but pyproject.toml does not ship works in the checkout and
fails only once installed.

The install is a real `pip install` of a copy of the checkout into a new venv. To stay fast and offline
it reuses this venv's packages (torch, PyQt6, setuptools, pip) through a .pth file, with
`--no-deps --no-build-isolation`; a .pth line only adds a path, so the editable install of this checkout
in that venv stays inactive and `import core` can only find the installed copy.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CHECKOUT = Path(__file__).resolve().parent.parent


PACKAGES = ("core", "presets", "training", "visualizer")


def checkout_files() -> list[str]:
    """The files a clone of this checkout would have (tracked, or new and not ignored), relative paths."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=CHECKOUT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    # A file deleted in the working tree but still in the index: a clone of this state would not have it.
    return [name for name in listing if name and (CHECKOUT / name).is_file()]


def copy_of_checkout(dest: Path) -> Path:
    """A copy of `checkout_files()` under `dest`."""
    for name in checkout_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(CHECKOUT / name, dest / name)
    return dest


def run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(the new venv's bin folder, the environment to run it in, a work folder outside the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    work = root / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.pop("SOUNDVJ_DEFAULT_MODEL", None)  # the suite pins the random weights; the installed copy uses its own
    env["XDG_CACHE_HOME"] = str(root / "cache")  # the kernel build and backend measurements stay in the temp dir

    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], work, env, 120)
    python = venv / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], work, env, 60).strip())
    (purelib / "reuse_project_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    source = copy_of_checkout(root / "source")
    run([python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-build-isolation",
         "--check-build-dependencies", "--ignore-installed", source], work, env, 600)
    shutil.rmtree(source)  # nothing may be read from the copy either
    return venv / "bin", env, work


def test_the_installed_copy_is_what_runs(installed):
    bin_dir, env, work = installed
    out = run([bin_dir / "python", "-c", "import core, presets, training, visualizer\n"
               "for m in (core, presets, training, visualizer): print(m.__file__)"], work, env, 60)
    for line in out.split():
        assert Path(line).resolve().is_relative_to(bin_dir.parent.resolve()), line
        assert not Path(line).resolve().is_relative_to(CHECKOUT), line


def test_package_data_is_installed(installed):
    bin_dir, env, work = installed
    out = run([bin_dir / "python", "-c",
               "import core\n"
               "from core import model_file, presets\n"
               "from core.stylegan3.ops import cpp_kernel\n"
               "print(core.__file__)\n"
               "print(cpp_kernel.SOURCE.is_file(), model_file.SHIPPED_DEFAULT.is_file())\n"
               "print(' '.join(sorted(p.stem for p in presets.preset_files(presets.SHIPPED_DIR))))"], work, env, 60)
    core_init, files_found, preset_names = out.splitlines()
    # Every file of the packages that is not Python is data the program reads: all of it must ship.
    site_dir = Path(core_init).parent.parent
    data = [name for name in checkout_files() if name.split("/")[0] in PACKAGES and not name.endswith(".py")]
    assert data and [name for name in data if not (site_dir / name).is_file()] == []
    # ... and the code finds it there.
    assert files_found == "True True"  # the C++ kernel source, the default model
    assert preset_names.split() == sorted(Path(name).stem for name in data if name.startswith("presets/") and name.endswith(".yaml"))


def test_render_demo_with_a_shipped_preset(installed):
    bin_dir, env, work = installed
    run([bin_dir / "soundvj", "render", "--demo", "--preset", "calm", "--size", "64x64", "--seconds", "1",
         "--fps", "4", "--quiet", "-o", "demo.mp4"], work, env, 300)
    assert (work / "demo.mp4").stat().st_size > 0


def test_live_help(installed):
    bin_dir, env, work = installed
    assert "usage: soundvj live" in run([bin_dir / "soundvj", "live", "--help"], work, env, 120)


def leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"a.b": value} for every non-dict value in a nested dict."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_training_config_prints_the_shipped_file(installed):
    # Without its YAML the stage silently runs on the code's defaults, so check the file's values show.
    bin_dir, env, work = installed
    printed = leaves(yaml.safe_load(run([bin_dir / "soundvj", "train", "stepper", "--print-config"], work, env, 120)))
    (config_file,) = CHECKOUT.glob("training/**/stepper.yaml")
    shipped = leaves(yaml.safe_load(config_file.read_text()))
    assert shipped and {key: printed.get(key) for key in shipped} == shipped
