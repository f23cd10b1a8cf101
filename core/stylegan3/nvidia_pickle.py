"""Read NVIDIA StyleGAN2/3 network pickles (`network-snapshot-*.pkl`) without running anything in them.

NVIDIA writes `pickle.dump(dict(G=..., D=..., G_ema=..., ...), f)`. Each network is a
`torch_utils.persistence.persistent_class` instance that pickles as
`_reconstruct_persistent_obj(meta)`, where `meta` carries the class name, the full source of the
defining module, and the nn.Module's `__dict__`. A normal `pickle.load` would `exec` that source.

Here a restricted unpickler builds only an allowlisted set of globals, each mapped to a function of
ours that checks its arguments; networks become inert records (the module source is kept as text
and never compiled). Neither NVIDIA's `dnnlib`/`torch_utils` nor any other code is imported.
Tensor storages are `torch.save` streams inside the pickle; we check their declared sizes against
the bytes present, then decode them with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import codecs
import functools
import io
import math
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from core.errors import SoundvjError, one_line

try:  # numpy >= 2 moved these to numpy._core; older pickles still name numpy.core
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import scalar as _numpy_scalar

NETWORK_KEYS = ("G_ema", "G", "D")

# Loading may allocate at most this much beyond the file's own size (which already bounds the data a
# legitimate pickle holds); it stops forged sizes and repeated copies from blowing up memory.
_BUDGET_SLACK_BYTES = 64 << 20
_MAX_NESTING = 64  # module trees and kwargs are a few levels deep; deeper means a cycle or an attack
# NVIDIA's snapshots run tens of thousands of pickle opcodes (13k for a 256 px G and G_ema); each opcode
# makes at most one object, so this bounds the objects a small hostile file can make.
_MAX_OPCODES = 2_000_000
# Values visited when turning a network into plain data, a shared object counted each time it is
# reached: a 40-level `x = [x, x]` is 600 bytes of pickle and 2^40 visits. Real networks: a few thousand.
_MAX_NODES = 1_000_000


class _Refused(Exception):
    """The pickle asks for something we will not build. The message is the reason, without the file."""


# Names and messages come from the file: `one_line` keeps them printable, short and on one line.
NAME_LIMIT = 120


def _global_name(module: object, name: object) -> str:
    """`module.name` of a global the pickle asks for, safe to print."""
    return f"{one_line(module, limit=NAME_LIMIT)}.{one_line(name, limit=NAME_LIMIT)}"


class _Budget:
    """Counts bytes our constructors allocate, so a small file cannot make us allocate a huge one."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.opcodes = 0

    def count_opcode(self) -> None:
        self.opcodes += 1
        if self.opcodes > _MAX_OPCODES:
            raise _Refused(f"it runs more than {_MAX_OPCODES:,} pickle operations; a network pickle runs tens of thousands")

    def charge(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise _Refused(
                f"it would need more than {self.limit >> 20} MiB to load, far more than its size justifies"
            )


# ----------------------------------------------------------------------------------------------
# The unpickler itself: Python's own implementation (not the C one), so each opcode can be checked
# before its result is used. The C unpickler builds dict keys and set items by hashing them, and
# hashing a 200,000-deep tuple recurses in C until the process crashes (no exception to catch);
# here a tuple nested deeper than _MAX_NESTING is refused the moment it is built. The pure-Python
# unpickler is fast enough: the opcodes are few (tensor data comes in a few large byte strings).


def _counted(operation: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(self: "_CheckedUnpickler") -> None:
        self._budget.count_opcode()
        operation(self)

    return run


def _tuple_checked(operation: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(self: "_CheckedUnpickler") -> None:
        self._budget.count_opcode()
        operation(self)
        self._check_tuple(self.stack[-1])

    return run


class _CheckedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]  # the pure-Python unpickler
    """Counts opcodes against the budget and bounds tuple nesting as tuples are built."""

    dispatch = {code: _counted(operation) for code, operation in pickle._Unpickler.dispatch.items()}
    for _opcode in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3):
        dispatch[_opcode[0]] = _tuple_checked(pickle._Unpickler.dispatch[_opcode[0]])
    del _opcode

    def __init__(self, file: Any, budget: _Budget):
        super().__init__(file)
        self._budget = budget
        # id -> (tuple, nesting depth) for tuples holding tuples; the reference keeps the id unique.
        self._tuple_depths: dict[int, tuple[tuple, int]] = {}

    def _check_tuple(self, value: Any) -> None:
        depths = self._tuple_depths
        depth = 1 + max((depths.get(id(v), (None, 1))[1] for v in value if type(v) is tuple), default=0)
        if depth > _MAX_NESTING:
            raise _Refused(f"its tuples are nested too deeply (more than {_MAX_NESTING} levels)")
        if depth > 1:
            depths[id(value)] = (value, depth)


# ----------------------------------------------------------------------------------------------
# Objects the unpickler may hold. Pickle's BUILD opcode sets attributes or calls __setstate__ on
# whatever object is on its stack, so everything we hand it is read-only unless built to accept state.


class _Sealed(type):
    """Metaclass that makes our classes read-only, so BUILD cannot rewrite their methods."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise _Refused("the pickle tries to modify a loader class")

    def __delattr__(cls, name: str) -> None:
        raise _Refused("the pickle tries to modify a loader class")


class _Inert(metaclass=_Sealed):
    """No __dict__, no attribute writes, no state: BUILD on one of these is refused."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise _Refused("the pickle tries to set attributes on a loader object")

    def __delattr__(self, name: str) -> None:
        raise _Refused("the pickle tries to delete attributes of a loader object")

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"the pickle tries to set the state of {self!r}")

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} is a loader object and cannot be pickled")

    def _init(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)


class _Marker(_Inert):
    """A global that is only ever an argument (e.g. `numpy.ndarray` for `_reconstruct`); never callable."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self._init(name=name)

    def __repr__(self) -> str:
        return f"<marker {self.name}>"


class _LoaderFunction(_Inert):
    """What the pickle gets for an allowlisted function: calls our checked version."""

    __slots__ = ("name", "_function")

    def __init__(self, name: str, function: Callable[..., Any]):
        self._init(name=name, _function=function)

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)

    def __repr__(self) -> str:
        return f"<loader for {self.name}>"


class _PersistentObject(_Inert):
    """Inert stand-in for an instance of one of NVIDIA's persistent classes: names and data only."""

    __slots__ = ("class_name", "module_src", "version", "state")

    def __init__(self, class_name: str, module_src: str, version: Any, state: dict):
        self._init(class_name=class_name, module_src=module_src, version=version, state=state)

    def __repr__(self) -> str:
        return f"<persistent {self.class_name}>"


class _PlainObject(_Inert):
    """Stand-in for a non-persistent torch.nn module (e.g. ModuleList) pickled by copyreg: the class
    is only named, never imported; BUILD may hand it its `__dict__` once."""

    __slots__ = ("state",)
    qualified_name = "?"

    def __new__(cls, *args: Any) -> "_PlainObject":
        if args:
            raise _Refused(f"{cls.qualified_name} is constructed with arguments")
        instance = object.__new__(cls)
        object.__setattr__(instance, "state", None)
        return instance

    def __setstate__(self, state: Any) -> None:
        if self.state is not None or not isinstance(state, dict):
            raise _Refused(f"{self.qualified_name} gets a malformed state")
        object.__setattr__(self, "state", state)

    def __repr__(self) -> str:
        return f"<module {self.qualified_name}>"


@functools.lru_cache(maxsize=256)  # names come from the file: keep the cache bounded
def _plain_object_class(qualified_name: str) -> type:
    namespace = {"__slots__": (), "qualified_name": qualified_name}
    return _Sealed(qualified_name.rpartition(".")[2], (_PlainObject,), namespace)


class _EasyDict(dict, metaclass=_Sealed):
    """Stand-in for `dnnlib.util.EasyDict` (a dict with attribute access); converted to dict afterwards."""

    __slots__ = ()

    def __init__(self) -> None:  # pickles fill it with SETITEMS; arguments would be a copy we don't need
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        if state:  # EasyDict keeps everything in its items; a non-empty __dict__ is not NVIDIA's
            raise _Refused("an EasyDict carries attribute state")


class _NdarrayStandIn(_Inert):
    """What `numpy.core.multiarray._reconstruct` returns: BUILD hands it numpy's array state, which
    we check (no object arrays, data length matches the shape) before numpy sees it."""

    __slots__ = ("_budget", "array")

    def __init__(self, budget: _Budget):
        self._init(_budget=budget, array=None)

    def __setstate__(self, state: Any) -> None:
        if self.array is not None or not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("a numpy array has a malformed state")
        shape, dtype, _is_fortran, data = state[-4:]
        count = math.prod(_int_tuple(shape, "numpy array shape"))
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise _Refused("a numpy array holds Python objects, which a network pickle does not contain")
        if not isinstance(data, (bytes, bytearray)) or len(data) != count * dtype.itemsize:
            raise _Refused("a numpy array's data does not match its shape")
        self._budget.charge(len(data))
        array = np.ndarray((0,), np.uint8)
        array.__setstate__(state)
        object.__setattr__(self, "array", array)

    def __repr__(self) -> str:
        return "<numpy array>"


class _SavedStorage(_Inert):
    """A tensor storage decoded from its `torch.save` bytes; only `_rebuild_tensor_v2` takes these."""

    __slots__ = ("untyped", "dtype", "numel")

    def __init__(self, untyped: torch.UntypedStorage, dtype: torch.dtype):
        self._init(untyped=untyped, dtype=dtype, numel=untyped.nbytes() // dtype.itemsize)

    def __repr__(self) -> str:
        return f"<storage {self.dtype} x {self.numel}>"


_NDARRAY = _Marker("numpy.ndarray")
_DICT_BASE = _Marker("builtins.dict")
_OBJECT_BASE = _Marker("builtins.object")
_TENSOR_TYPE = _Marker("torch.Tensor")
_PARAMETER_TYPE = _Marker("torch.nn.parameter.Parameter")


# ----------------------------------------------------------------------------------------------
# Checked constructors. Each takes the per-load budget first.


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int and v >= 0 for v in value):
        raise _Refused(f"a {what} is not a tuple of non-negative integers")
    return tuple(value)


def _check_no_hooks(hooks: Any) -> None:
    if hooks:  # torch always pickles an empty OrderedDict here; anything else would be callables
        raise _Refused("a tensor carries backward hooks")


def _rebuild_tensor_v2(
    budget: _Budget, storage: Any, offset: Any, size: Any, stride: Any,
    requires_grad: Any = False, backward_hooks: Any = None, metadata: Any = None,
) -> torch.Tensor:
    if not isinstance(storage, _SavedStorage):
        raise _Refused("a tensor is built on something other than a saved storage")
    size, stride = _int_tuple(size, "tensor size"), _int_tuple(stride, "tensor stride")
    if type(offset) is not int or offset < 0 or len(size) != len(stride):
        raise _Refused("a tensor has a malformed layout")
    _check_no_hooks(backward_hooks)
    if metadata:  # conj/neg bits; never set on network weights
        raise _Refused("a tensor carries metadata a network pickle does not use")
    # set_() silently GROWS a storage that is too small, so check the extent ourselves.
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if 0 not in size else offset - 1
    if last >= storage.numel:
        raise _Refused("a tensor reaches past the end of its storage")
    return torch.empty(0, dtype=storage.dtype).set_(storage.untyped, offset, size, stride)


def _rebuild_parameter(budget: _Budget, data: Any, requires_grad: Any, backward_hooks: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise _Refused("a parameter is built from something other than a tensor")
    _check_no_hooks(backward_hooks)
    return data  # a plain tensor: callers want weights, not trainable parameters


def _rebuild_parameter_with_state(
    budget: _Budget, data: Any, requires_grad: Any, backward_hooks: Any, state: Any
) -> torch.Tensor:
    return _rebuild_parameter(budget, data, requires_grad, backward_hooks)  # python attributes dropped


_TENSOR_REBUILDERS = {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                      "torch._utils._rebuild_parameter_with_state"}


def _rebuild_from_type_v2(budget: _Budget, function: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    # A tensor that had python attributes; rebuild the tensor, drop the attributes.
    if not (isinstance(function, _LoaderFunction) and function.name in _TENSOR_REBUILDERS):
        raise _Refused("a tensor is rebuilt by something other than torch's tensor rebuild functions")
    if new_type not in (_TENSOR_TYPE, _PARAMETER_TYPE) or not isinstance(args, tuple):
        raise _Refused("a tensor has an unexpected type")
    return function(*args)


_LEGACY_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}
_TORCH_SAVE_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_SAVE_PROTOCOL = 1001


class _StorageHeaderReader(_CheckedUnpickler):
    """Reads the small pickles of a legacy `torch.save` stream: no callables, only storage types."""

    def __init__(self, stream: io.BytesIO, storages: dict, budget: _Budget):
        super().__init__(stream, budget)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _LEGACY_STORAGE_DTYPES:
            return _LEGACY_STORAGE_DTYPES[name]  # a dtype: not callable, cannot run anything
        raise _Refused(f"a tensor's saved storage references {_global_name(module, name)}")

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage type, key, location, numel, view metadata)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)
                and isinstance(pid[2], str) and type(pid[4]) is int and pid[4] >= 0):
            raise _Refused("a tensor's saved storage has a malformed header")
        _kind, dtype, key, _location, numel, view = pid
        if view is not None:  # (view key, offset, size) into the root storage
            if not (isinstance(view, tuple) and len(view) == 3 and all(type(v) is int and v >= 0 for v in view[1:])
                    and view[1] + view[2] <= numel):
                raise _Refused("a tensor's saved storage has a malformed view")
        if self._storages.setdefault(key, (dtype, numel)) != (dtype, numel):
            raise _Refused("a tensor's saved storage declares one storage twice")
        return None


def _declared_storage_bytes(data: bytes, budget: _Budget) -> int:
    """Walk a legacy `torch.save` stream (what `_load_from_bytes` gets) without building anything,
    check every storage's declared size against the bytes actually present, and return the total."""
    if not data.startswith(b"\x80\x02"):  # tensors pickle their storage with the legacy (protocol 2) torch.save
        raise _Refused("a tensor's storage is not a legacy torch.save stream")
    stream = io.BytesIO(data)
    storages: dict[str, tuple[torch.dtype, int]] = {}
    if _StorageHeaderReader(stream, storages, budget).load() != _TORCH_SAVE_MAGIC:
        raise _Refused("a tensor's storage is not a torch.save stream")
    if _StorageHeaderReader(stream, storages, budget).load() != _TORCH_SAVE_PROTOCOL:
        raise _Refused("a tensor's storage has an unknown torch.save version")
    _StorageHeaderReader(stream, storages, budget).load()  # sys info
    _StorageHeaderReader(stream, storages, budget).load()  # the storage itself, as persistent ids
    keys = _StorageHeaderReader(stream, storages, budget).load()
    if not isinstance(keys, list) or sorted(keys) != sorted(storages):
        raise _Refused("a tensor's saved storage lists storages it does not declare")
    total = 0
    for key in keys:
        dtype, numel = storages[key]
        header = stream.read(8)
        nbytes = numel * dtype.itemsize
        if len(header) != 8 or struct.unpack("<q", header)[0] != numel or len(data) - stream.tell() < nbytes:
            raise _Refused("a tensor's saved storage is shorter than it declares")
        stream.seek(nbytes, io.SEEK_CUR)
        total += nbytes
    return total


def _load_from_bytes(budget: _Budget, data: Any) -> _SavedStorage:
    # torch's own _load_from_bytes calls torch.load(weights_only=False), which runs arbitrary pickles.
    if not isinstance(data, bytes):
        raise _Refused("a tensor's storage is not bytes")
    budget.charge(_declared_storage_bytes(data, budget))  # before torch allocates anything
    typed = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    if not isinstance(typed, torch.storage.TypedStorage):
        raise _Refused("a tensor's storage does not decode to a storage")
    # What typed.untyped() returns, without its warning that TypedStorage is going away.
    return _SavedStorage(typed._untyped_storage, typed.dtype)


def _numpy_reconstruct(budget: _Budget, subtype: Any, shape: Any, dtype_code: Any) -> _NdarrayStandIn:
    # numpy pickles arrays as _reconstruct(ndarray, (0,), b'b') followed by BUILD with the real state.
    if subtype is not _NDARRAY or _int_tuple(shape, "numpy array shape") != (0,):
        raise _Refused("a numpy array is reconstructed in an unusual way")
    return _NdarrayStandIn(budget)


def _numpy_dtype(budget: _Budget, spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str) or not isinstance(align, int) or not isinstance(copy, int):
        raise _Refused("a numpy dtype is described by something other than a type code")
    return np.dtype(spec, bool(align), bool(copy))


def _numpy_scalar_checked(budget: _Budget, dtype: Any, data: Any = None) -> Any:
    # Without data numpy allocates a zeroed scalar of the dtype's itemsize, which can be huge.
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _Refused("a numpy scalar has an unsupported dtype")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _Refused("a numpy scalar's data does not match its dtype")
    return _numpy_scalar(dtype, data)


def _numpy_frombuffer(budget: _Budget, buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    # Pickle protocol 5 form of an array.
    if not isinstance(dtype, np.dtype) or dtype.hasobject or order not in ("C", "F"):
        raise _Refused("a numpy array has an unsupported dtype or order")
    shape = _int_tuple(shape, "numpy array shape")
    if not isinstance(buffer, (bytes, bytearray)) or len(buffer) != math.prod(shape) * dtype.itemsize:
        raise _Refused("a numpy array's data does not match its shape")
    budget.charge(len(buffer))
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _sized_argument(budget: _Budget, value: Any, types: tuple[type, ...], what: str) -> Any:
    if not isinstance(value, types):
        raise _Refused(f"a {what} is built from a {type(value).__name__}")
    budget.charge(64 * len(value))  # repeated calls on one big container would otherwise copy it each time
    return value


def _make_set(budget: _Budget, items: Any = ()) -> set:
    return set(_sized_argument(budget, items, (list, tuple, set, frozenset), "set"))


def _make_frozenset(budget: _Budget, items: Any = ()) -> frozenset:
    return frozenset(_sized_argument(budget, items, (list, tuple, set, frozenset), "frozenset"))


def _make_ordered_dict(budget: _Budget, items: Any = ()) -> OrderedDict:
    return OrderedDict(_sized_argument(budget, items, (list, tuple, dict), "OrderedDict"))


def _make_size(budget: _Budget, dims: Any) -> torch.Size:
    return torch.Size(_int_tuple(_sized_argument(budget, dims, (list, tuple), "torch.Size"), "torch.Size"))


def _make_device(budget: _Budget, kind: Any, index: Any = None) -> torch.device:
    if not isinstance(kind, str) or not (index is None or type(index) is int):
        raise _Refused("a torch.device is malformed")
    return torch.device(kind) if index is None else torch.device(kind, index)


def _codecs_encode(budget: _Budget, text: Any, encoding: Any = "utf-8") -> bytes:
    # Pickle protocols 0-2 store bytes as codecs.encode(latin-1 text, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("bytes are encoded in an unexpected way")
    budget.charge(len(text))
    return codecs.encode(text, "latin1")


def _copyreg_reconstructor(budget: _Budget, cls: Any, base: Any, state: Any) -> Any:
    # Protocol 0/1 form of object.__reduce_ex__; only for classes we stand in for.
    if cls is _EasyDict and base is _DICT_BASE and isinstance(state, dict):
        result = _EasyDict()
        result.update(_sized_argument(budget, state, (dict,), "EasyDict"))
        return result
    if isinstance(cls, type) and issubclass(cls, _PlainObject) and base is _OBJECT_BASE and state is None:
        return cls()
    raise _Refused("copyreg._reconstructor is used on a class a network pickle does not contain")


def _reconstruct_persistent_obj(budget: _Budget, meta: Any) -> _PersistentObject:
    # NVIDIA's version imports module_src as a new module and exec()s it; we keep it as text only.
    if not (isinstance(meta, dict) and meta.get("type") == "class" and isinstance(meta.get("class_name"), str)
            and isinstance(meta.get("module_src"), str) and isinstance(meta.get("state"), dict)):
        raise _Refused("a persistent object has malformed metadata")
    return _PersistentObject(meta["class_name"], meta["module_src"], meta.get("version"), meta["state"])


def _function(name: str, function: Callable[..., Any]) -> Callable[[_Budget], Any]:
    return lambda budget: _LoaderFunction(name, functools.partial(function, budget))


def _constant(value: Any) -> Callable[[_Budget], Any]:
    return lambda budget: value


# (module, name) -> factory of what the pickle gets for that global. Nothing else is ever resolved.
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[_Budget], Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _function("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _function("torch._utils._rebuild_parameter", _rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"):
        _function("torch._utils._rebuild_parameter_with_state", _rebuild_parameter_with_state),
    ("torch._tensor", "_rebuild_from_type_v2"): _function("torch._tensor._rebuild_from_type_v2", _rebuild_from_type_v2),
    ("torch.storage", "_load_from_bytes"): _function("torch.storage._load_from_bytes", _load_from_bytes),
    ("torch", "Tensor"): _constant(_TENSOR_TYPE),
    ("torch.nn.parameter", "Parameter"): _constant(_PARAMETER_TYPE),
    ("torch", "Size"): _function("torch.Size", _make_size),
    ("torch", "device"): _function("torch.device", _make_device),
    ("collections", "OrderedDict"): _function("collections.OrderedDict", _make_ordered_dict),
    ("builtins", "set"): _function("builtins.set", _make_set),
    ("builtins", "frozenset"): _function("builtins.frozenset", _make_frozenset),
    ("builtins", "dict"): _constant(_DICT_BASE),
    ("builtins", "object"): _constant(_OBJECT_BASE),
    ("_codecs", "encode"): _function("_codecs.encode", _codecs_encode),
    ("copyreg", "_reconstructor"): _function("copyreg._reconstructor", _copyreg_reconstructor),
    ("torch_utils.persistence", "_reconstruct_persistent_obj"):
        _function("torch_utils.persistence._reconstruct_persistent_obj", _reconstruct_persistent_obj),
    ("dnnlib.util", "EasyDict"): _constant(_EasyDict),
    ("numpy", "ndarray"): _constant(_NDARRAY),
    ("numpy", "dtype"): _function("numpy.dtype", _numpy_dtype),
}
for _numpy_core in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS.update({
        (f"{_numpy_core}.multiarray", "_reconstruct"): _function("numpy _reconstruct", _numpy_reconstruct),
        (f"{_numpy_core}.multiarray", "scalar"): _function("numpy scalar", _numpy_scalar_checked),
        (f"{_numpy_core}.numeric", "_frombuffer"): _function("numpy _frombuffer", _numpy_frombuffer),
    })
for _name, _value in vars(torch).items():  # torch.float32 etc. pickle as globals; they are plain values
    if isinstance(_value, torch.dtype):
        _ALLOWED_GLOBALS[("torch", _name)] = _constant(_value)

_MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # Python 2 names in protocol < 3


class _NetworkUnpickler(_CheckedUnpickler):
    """Unpickler that resolves only `_ALLOWED_GLOBALS` (plus torch.nn.modules classes, as inert names)."""

    def find_class(self, module: str, name: str) -> Any:
        module = _MODULE_ALIASES.get(module, module)
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is not None:
            return factory(self._budget)
        if module.startswith("torch.nn.modules.") and name.isidentifier():
            return _plain_object_class(f"{module}.{name}")  # only the name; torch's class is not touched
        raise _Refused(
            f"the pickle references {_global_name(module, name)}, which a network pickle does not contain"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("the pickle uses persistent ids, which a network pickle does not contain")


# ----------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class PickledNetwork:
    """One network from an NVIDIA pickle, as data: enough to rebuild it with our own classes."""

    class_name: str  # e.g. 'training.networks_stylegan3.Generator'
    init_args: tuple
    init_kwargs: dict  # plain dicts all the way down (EasyDicts converted)
    state_dict: dict[str, torch.Tensor]  # same names and order as module.state_dict()
    attributes: dict  # top-level public attributes (z_dim, img_resolution, ...), for information
    available_keys: list[str]  # keys of the pickle's top-level dict


def _describe(value: Any) -> str:
    if isinstance(value, _PersistentObject):
        return value.class_name
    if isinstance(value, _EasyDict):
        return "EasyDict"
    return repr(value) if isinstance(value, _Inert) else type(value).__name__


class _BoundedFile:
    """The file as the unpickler sees it: no read asks for more than what is left. Python allocates
    a read's full length before reading, so a forged 1.5 GB length in a 2 kB file would otherwise
    allocate 1.5 GB (found by the property tests)."""

    def __init__(self, file: Any, size: int):
        self._file, self._size = file, size

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._size - self._file.tell())
        return self._file.read(left if n is None or n < 0 or n > left else n)

    def readline(self, limit: int = -1) -> bytes:
        return self._file.readline(limit)


def _unpickle_file(path: Path) -> Any:
    if not path.exists():
        raise SoundvjError(f"{path}: no such file")
    if not path.is_file():
        raise SoundvjError(f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise SoundvjError(f"{path}: the file is empty, not a network pickle")
    try:
        with open(path, "rb") as file:
            return _NetworkUnpickler(_BoundedFile(file, size), _Budget(2 * size + _BUDGET_SLACK_BYTES)).load()
    except _Refused as refusal:
        raise SoundvjError(f"{path}: refusing to load: {refusal}") from None
    except OSError as error:
        raise SoundvjError(f"{path}: cannot read the file ({one_line(error)})") from None
    except EOFError:
        raise SoundvjError(f"{path}: the pickle ends early (truncated file?)") from None
    except MemoryError:
        raise SoundvjError(f"{path}: not a readable network pickle (it declares more data than fits in memory)") \
            from None
    except Exception as error:  # noqa: BLE001 - any failure to decode untrusted bytes is the file's fault
        reason = one_line(f"{type(error).__name__}: {error}", limit=NAME_LIMIT)
        raise SoundvjError(
            f"{path}: not a readable network pickle (corrupt, truncated or not a pickle: {reason})"
        ) from None


def _network_dict(path: Path) -> dict:
    top = _unpickle_file(path)
    if not isinstance(top, dict):
        raise SoundvjError(f"{path}: no generator: the pickle holds a {_describe(top)}, not NVIDIA's dict of networks")
    return top


class _NodeCounter:
    """Counts values visited while walking a network, shared references each time they are reached."""

    def __init__(self, limit: int = _MAX_NODES):
        self.left = limit

    def visit(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _Refused(
                f"the network holds too many values (more than {_MAX_NODES:,}, a shared value counted each time "
                "it is reached); a network pickle holds a few thousand"
            )


def _to_plain(value: Any, nodes: _NodeCounter, depth: int = 0) -> Any:
    """Replace our stand-ins by ordinary Python/numpy values (dict subclasses become dict)."""
    nodes.visit()
    if depth > _MAX_NESTING:
        raise _Refused("the values are nested too deeply")
    if isinstance(value, dict):
        return {_to_plain(k, nodes, depth + 1): _to_plain(v, nodes, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)) and not isinstance(value, torch.Size):
        return type(value)(_to_plain(v, nodes, depth + 1) for v in value)
    if isinstance(value, _NdarrayStandIn):
        if value.array is None:
            raise _Refused("a numpy array has no data")
        return value.array
    if isinstance(value, (_PersistentObject, _PlainObject)):
        return repr(value)  # informational only; NVIDIA kwargs never hold networks
    if isinstance(value, _Inert):
        raise _Refused(f"a value is a bare {value!r}")
    return value  # None, numbers, str, bytes, tensors, numpy scalars/arrays, torch dtypes/devices


def _module_state(value: Any, where: str) -> dict:
    if isinstance(value, (_PersistentObject, _PlainObject)) and isinstance(value.state, dict):
        return value.state
    raise _Refused(f"submodule '{where}' is a {_describe(value)}, not a module")


def _collect_tensors(
    state: dict, prefix: str, out: dict[str, torch.Tensor], nodes: _NodeCounter, depth: int = 0
) -> None:
    """Same walk as nn.Module.state_dict(): own parameters, persistent buffers, then children."""
    nodes.visit()
    if depth > _MAX_NESTING:
        raise _Refused("the module tree is nested too deeply")
    where = prefix[:-1] or "<root>"
    parameters = state.get("_parameters", {})
    buffers = state.get("_buffers", {})
    children = state.get("_modules", {})
    non_persistent = state.get("_non_persistent_buffers_set", set())
    if not all(isinstance(d, dict) for d in (parameters, buffers, children)) or not isinstance(
        non_persistent, (set, frozenset)
    ):
        raise _Refused(f"module '{where}' has a malformed __dict__")
    for kind, entries in (("parameter", parameters), ("buffer", buffers)):
        for name, tensor in entries.items():
            if tensor is None or (kind == "buffer" and name in non_persistent):
                continue
            if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
                shown = one_line(name, limit=NAME_LIMIT)
                raise _Refused(f"{kind} '{prefix}{shown}' is a {_describe(tensor)}, not a tensor")
            nodes.visit()
            out[prefix + name] = tensor
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(name, str):
            raise _Refused(f"module '{where}' has a child with a non-string name")
        _collect_tensors(_module_state(child, prefix + name), f"{prefix}{name}.", out, nodes, depth + 1)


def _build_network(network: _PersistentObject, available_keys: list[str]) -> PickledNetwork:
    state = network.state
    state_dict: dict[str, torch.Tensor] = {}
    nodes = _NodeCounter()
    _collect_tensors(state, "", state_dict, nodes)
    init_args = _to_plain(state.get("_init_args", ()), nodes)
    init_kwargs = _to_plain(state.get("_init_kwargs", {}), nodes)
    if not isinstance(init_args, (tuple, list)) or not isinstance(init_kwargs, dict):
        raise _Refused("the network's constructor arguments are malformed")
    attributes = {
        k: _to_plain(v, nodes) for k, v in state.items() if isinstance(k, str) and not k.startswith("_") and k != "training"
    }
    return PickledNetwork(
        class_name=network.class_name,
        init_args=tuple(init_args),
        init_kwargs=init_kwargs,
        state_dict=state_dict,
        attributes=attributes,
        available_keys=available_keys,
    )


def read_network_pickle(path: str | Path, key: str = "G_ema") -> PickledNetwork:
    """Read one network ('G_ema', 'G' or 'D') from an NVIDIA StyleGAN2/3 pickle, executing nothing."""
    path = Path(path)
    top = _network_dict(path)
    available_keys = [str(k) for k in top]
    if key not in top:
        present = ", ".join(one_line(k, limit=40) for k in available_keys) or "nothing"
        raise SoundvjError(f"{path}: no network under '{key}'; the pickle holds: {present}")
    network = top[key]
    if not isinstance(network, _PersistentObject):
        raise SoundvjError(f"{path}: no generator: '{key}' holds a {_describe(network)}, not an NVIDIA network")
    try:
        return _build_network(network, available_keys)
    except _Refused as refusal:
        raise SoundvjError(f"{path}: refusing to load '{key}': {refusal}") from None


def list_pickle_contents(path: str | Path) -> dict[str, str | None]:
    """Top-level keys of an NVIDIA pickle -> network class name, or None for non-networks
    (e.g. training_set_kwargs). Loads the whole file, tensors included."""
    path = Path(path)
    return {
        str(k): v.class_name if isinstance(v, _PersistentObject) else None
        for k, v in _network_dict(path).items()
    }
