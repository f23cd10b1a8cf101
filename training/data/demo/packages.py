"""The Debian packages the demo set reads, fetched without installing them.

Every package is read from `ROOT/<package>/<path inside the package>` (the installed layout under one
folder per package). ROOT is either:

* a package cache (`--package-cache DIR`, default `~/.cache/soundvj/debian`): a package whose files
  are missing there is fetched with `apt-get download PKG` into `DIR/debs/` (a `.deb` already there
  is reused), and only the files the set uses are extracted from it with
  `dpkg-deb --fsys-tarfile DEB | tar -x --wildcards ./PATH ...` into `DIR/<package>/`. Some packages
  are over a gigabyte and the set needs a few megabytes of them: nothing is installed, and no root is
  needed. An archive inside a package (0ad's `public.zip`) is extracted whole and read as a zip.
* a source root (`--source-root DIR`): a tree with that layout made some other way (tests build small
  fake ones); nothing is fetched, a missing file is an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from core.errors import SoundvjError, one_line
from training.data.demo import sources as S

DEFAULT_CACHE = Path.home() / ".cache" / "soundvj" / "debian"
DEB_FOLDER = "debs"


def missing_files(root: Path, package: str) -> list[str]:
    """The paths of `package` the set reads that are not under `root/<package>/`."""
    base = root / package
    return [p for p in S.files_of(package) if not (base / p.rstrip("/")).exists()]


def check_source_root(root: Path) -> None:
    """A one-line error naming the packages (and a first missing file) a source root lacks."""
    missing = {pkg: files for pkg in S.packages() if (files := missing_files(root, pkg))}
    if missing:
        first_pkg, files = next(iter(missing.items()))
        raise SoundvjError(f"--source-root {root}: packages missing: {', '.join(missing)} "
                           f"(expected e.g. {root / first_pkg / files[0]})")


def find_deb(cache: Path, package: str) -> Path | None:
    """The newest-named `.deb` of `package` in `cache/debs/` (as `apt-get download` names it), if any."""
    folder = cache / DEB_FOLDER
    debs = sorted(folder.glob(f"{package}_*.deb")) if folder.is_dir() else []
    return debs[-1] if debs else None


def download(cache: Path, package: str, log: Callable[[str], None]) -> Path:
    """`apt-get download PACKAGE` into `cache/debs/` (no root needed); the `.deb`'s path."""
    if shutil.which("apt-get") is None:
        raise SoundvjError(f"data demo: package {package} is not in {cache / DEB_FOLDER} and apt-get is not available "
                           f"to download it (put {package}_*.deb there, or use --source-root)")
    folder = cache / DEB_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    log(f"data demo: downloading {package} with apt-get download")
    result = subprocess.run(["apt-get", "download", package], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deb = find_deb(cache, package)
    if result.returncode != 0 or deb is None:
        last = (result.stderr or "").strip().splitlines()[-1:] or ["no message"]
        raise SoundvjError(f"data demo: apt-get download {package} failed ({one_line(last[0])}); check the network "
                           f"and the apt sources (apt-get update), or put {package}_*.deb in {folder}")
    return deb


def extract(deb: Path, target: Path, paths: list[str]) -> None:
    """Extract `paths` (files, or folders ending in /) of `deb` into `target` (its installed layout)."""
    for tool in ("dpkg-deb", "tar"):
        if shutil.which(tool) is None:
            raise SoundvjError(f"data demo: {tool} is not available (needed to extract {deb.name})")
    target.mkdir(parents=True, exist_ok=True)
    patterns = [f"./{p.rstrip('/')}" + ("/*" if p.endswith("/") else "") for p in paths]
    fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tar = subprocess.run(["tar", "-x", "-C", str(target), "--wildcards", *patterns], stdin=fsys.stdout,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    fsys.stdout.close()
    fsys_err = fsys.stderr.read().decode(errors="replace")
    fsys.stderr.close()
    if fsys.wait() != 0:
        raise SoundvjError(f"{deb}: dpkg-deb cannot read it ({one_line(fsys_err) or 'no message'})")
    if tar.returncode != 0:
        first = (tar.stderr or "").strip().splitlines()[:1] or ["no message"]
        raise SoundvjError(f"{deb}: does not hold the expected files ({one_line(first[0])})")


def ensure_cache(cache: Path, log: Callable[[str], None]) -> Path:
    """Fetch and extract what is missing in the package cache; returns the cache (the root to read)."""
    for package in S.packages():
        missing = missing_files(cache, package)
        if not missing:
            continue
        deb = find_deb(cache, package) or download(cache, package, log)
        log(f"data demo: extracting {len(missing)} file(s) of {package}")
        extract(deb, cache / package, missing)
        still = missing_files(cache, package)
        if still:
            raise SoundvjError(f"{deb}: has no {still[0]} (expected in package {package})")
    return cache


def resolve_root(source_root: str | None, package_cache: str | None, log: Callable[[str], None]) -> Path:
    """The folder to read packages from: the source root as given (checked), else the filled cache."""
    if source_root:
        root = Path(source_root)
        check_source_root(root)
        return root
    cache = Path(os.path.expanduser(package_cache)) if package_cache else DEFAULT_CACHE
    return ensure_cache(cache, log)
