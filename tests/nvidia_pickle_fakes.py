"""Builds pickles in the layout of NVIDIA's StyleGAN2/3 network snapshots, without NVIDIA's code.

NVIDIA's `torch_utils.persistence.persistent_class` instances pickle as
`(torch_utils.persistence._reconstruct_persistent_obj, (meta,), None)`; `dnnlib.util.EasyDict` is a
dict subclass. Both modules are faked in `sys.modules` only while pickling (`fake_nvidia_modules`),
so the loader under test runs without them.
"""

from __future__ import annotations

import importlib.abc
import pickle
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

FAKE_MODULE_NAMES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")


def _reconstruct_persistent_obj(meta: dict) -> Any:
    # NVIDIA's would exec meta['module_src']; the loader under test must never call this.
    raise AssertionError("the fake NVIDIA reconstructor ran during loading")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class EasyDict(dict):
    """Same behaviour as dnnlib.util.EasyDict: attribute access to the items."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


EasyDict.__module__ = "dnnlib.util"


@contextmanager
def fake_nvidia_modules() -> Iterator[None]:
    """Register stand-ins for torch_utils.persistence and dnnlib.util while pickling, then remove them."""
    assert not any(name in sys.modules for name in FAKE_MODULE_NAMES), "real NVIDIA modules are loaded"
    modules = {name: types.ModuleType(name) for name in FAKE_MODULE_NAMES}
    modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    modules["torch_utils"].persistence = modules["torch_utils.persistence"]
    modules["dnnlib.util"].EasyDict = EasyDict
    modules["dnnlib"].util = modules["dnnlib.util"]
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in FAKE_MODULE_NAMES:
            sys.modules.pop(name, None)


class _ForbidImports(importlib.abc.MetaPathFinder):
    def __init__(self, prefixes: tuple[str, ...]):
        self.prefixes = prefixes
        self.attempts: list[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname.split(".")[0] in self.prefixes:
            self.attempts.append(fullname)
            raise ImportError(f"test forbids importing {fullname}")
        return None


@contextmanager
def forbid_imports(*prefixes: str) -> Iterator[_ForbidImports]:
    """Fail any import of these top-level packages (e.g. NVIDIA's) and record the attempt."""
    finder = _ForbidImports(prefixes)
    sys.meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)


class Persistent:
    """Pickles `module` the way NVIDIA's persistent_class does. Children become Persistent too,
    except instances of `plain_types`, which pickle as ordinary torch modules (via copyreg)."""

    def __init__(
        self,
        module: torch.nn.Module,
        class_name: str,
        module_src: str,
        init_args: tuple = (),
        init_kwargs: dict | None = None,
        plain_types: tuple[type, ...] = (torch.nn.Linear,),
        version: int = 6,
    ):
        self.module, self.class_name, self.module_src = module, class_name, module_src
        self.init_args, self.init_kwargs = init_args, init_kwargs or {}
        self.plain_types, self.version = plain_types, version

    def _child(self, child: torch.nn.Module | None) -> Any:
        if child is None or isinstance(child, self.plain_types):
            return child
        return Persistent(child, f"training.fake.{type(child).__name__}", self.module_src, plain_types=self.plain_types)

    def __reduce__(self) -> tuple:
        state = dict(self.module.__dict__)
        modules = self.module._modules
        state["_modules"] = type(modules)((name, self._child(child)) for name, child in modules.items())
        state["_init_args"] = self.init_args
        state["_init_kwargs"] = self.init_kwargs
        meta = dict(type="class", version=self.version, module_src=self.module_src,
                    class_name=self.class_name, state=state)
        return (_reconstruct_persistent_obj, (meta,), None)


class Reduces:
    """Pickles as `function(*args)`: how a malicious pickle makes the loader call something."""

    def __init__(self, function: Callable[..., Any], *args: Any):
        self.function, self.args = function, args

    def __reduce__(self) -> tuple:
        return (self.function, self.args)


def marker_source(marker: Path) -> str:
    """Module source that leaves `marker` behind (and fails) if anything ever executes it."""
    return f"open({str(marker)!r}, 'w').write('executed')\nraise SystemExit('module_src was executed')\n"


def dump_snapshot(path: Path, snapshot: dict, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    """Pickle `snapshot` with the fake NVIDIA modules present, as NVIDIA's training loop does."""
    with fake_nvidia_modules():
        data = pickle.dumps(snapshot, protocol=protocol)
    path.write_bytes(data)
    return data
