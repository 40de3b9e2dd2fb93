"""Read the AVE release's PyTorch-0.3 whole-module pickles without running their code.

The release (``YapengTian/AVE-ECCV18``) saved its trained networks with ``torch.save(model)``:
``model/AV_att.pt`` and ``model/AV_att_weak.pt`` (class ``att_Net`` of ``models.py`` /
``models_weakly.py``) and ``DMRN.pt`` (``TBMRF_Net`` of ``models_fusion.py``). That is the legacy
(non-zip) format: pickled magic number, protocol and system info, then the pickled module, whose
tensors point at storages through persistent ids, then the raw storage bytes. Unpickling a module
normally imports and runs the classes it names; here torch's own reader does the storage work while
a restricted unpickler resolves only an allow-list of globals:

- the tensor rebuild functions of ``torch._utils`` (wrapped, their arguments type-checked) and the
  storage types (resolved by torch itself);
- ``collections.OrderedDict``, ``builtins.set``/``frozenset``, ``torch.Size``;
- ``torch.nn.parameter.Parameter`` (PyTorch 0.3 pickled parameters as a call of the class) and
  ``torch.nn.backends.thnn._get_thnn_function_backend`` (0.3 modules carried a backend object);
- classes: any ``torch.nn.*`` class, ``att_Net``/``TBMRF_Net`` and any class of a ``models*``
  module become :class:`ReleaseModule`, a plain container that only stores its pickled state.

Any other global (``os.system``, ``builtins.eval``, ...) raises :class:`ReleaseCheckpointError`
before anything is called. The result is a flat ``{dotted.name: tensor}`` dict taken from the
module tree's ``_parameters`` and ``_buffers`` (nested through ``_modules``), plus the root class
path and its plain attributes (e.g. ``TBMRF_Net.nb_block``). Zip-format files (torch >= 1.6) and
pickled state dicts are read the same way.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import re
import types
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.core.fetch import sha256_file

#: The release's network classes, as the pickles record them.
RELEASE_CLASS_NAMES = ("att_Net", "TBMRF_Net")
_MODELS_MODULE = re.compile(r"models\w*(\..*)?$")
_CLASS_NAME = re.compile(r"[A-Z]\w*$")


class ReleaseCheckpointError(ValueError):
    """The checkpoint is unreadable, names a global outside the allow-list, or does not fit."""


class ReleaseModule:
    """Stand-in for a pickled ``nn.Module``: keeps the pickled state as plain attributes, runs nothing."""

    release_class = "?"
    dump_patches = False  # torch reads this when the pickled class source differs from ours

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict | None):
            state, slots = state
            self.__dict__.update(slots or {})
        if isinstance(state, dict):
            self.__dict__.update(state)
        elif state is not None:
            self.__dict__["_pickled_state"] = state

    def __repr__(self) -> str:
        return f"<ReleaseModule {self.release_class}>"


_CONTAINERS: dict[str, type[ReleaseModule]] = {}


def _container(path: str) -> type[ReleaseModule]:
    """One :class:`ReleaseModule` subclass per pickled class path (so the path is kept)."""
    if path not in _CONTAINERS:
        name = path.rsplit(".", 1)[-1]
        _CONTAINERS[path] = type(name, (ReleaseModule,), {"release_class": path})
    return _CONTAINERS[path]


class _LegacyParameter:
    """PyTorch 0.3 pickled a Parameter as ``Parameter(data)`` plus a state tuple; keep the data only."""

    def __init__(self, data: Any = None, requires_grad: bool = True):
        if not isinstance(data, torch.Tensor):
            raise ReleaseCheckpointError(
                f"a pickled Parameter holds {type(data).__name__}, not a tensor"
            )
        self.data = data

    def __setstate__(self, state: Any) -> None:  # (requires_grad, volatile, backward_hooks): unused
        pass


def _check_storage(storage: Any, offset: Any, size: Any, stride: Any) -> None:
    if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
        raise ReleaseCheckpointError(f"tensor rebuild got {type(storage).__name__}, not a storage")
    ints = [offset, *size, *stride]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
        raise ReleaseCheckpointError("tensor rebuild got a non-integer offset, size or stride")


def _rebuild_tensor(storage, storage_offset, size, stride):
    _check_storage(storage, storage_offset, size, stride)
    return torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, torch.Tensor):
        raise ReleaseCheckpointError(
            f"a pickled Parameter holds {type(data).__name__}, not a tensor"
        )
    return data


def _no_backend() -> None:
    """PyTorch 0.3's ``_get_thnn_function_backend``: the backend object is not needed."""
    return None


SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): _LegacyParameter,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,
}


def resolve_global(module: str, name: str) -> Any:
    """What a pickled global reference becomes; anything off the allow-list is refused."""
    if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 pickles (__builtin__, copy_reg)
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if (module, name) in SAFE_GLOBALS:
        return SAFE_GLOBALS[(module, name)]
    path = f"{module}.{name}"
    is_class = bool(_CLASS_NAME.match(name)) or name in RELEASE_CLASS_NAMES
    if is_class and (
        module.startswith("torch.nn.")
        or _MODELS_MODULE.match(module)
        or name in RELEASE_CLASS_NAMES
    ):
        return _container(path)
    raise ReleaseCheckpointError(
        f"the checkpoint refers to {path}, which is not on the allow-list of a release checkpoint "
        "(tensor rebuilding, torch.nn containers, the release's att_Net/TBMRF_Net); refusing to "
        "load it, nothing was executed"
    )


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals come only from :func:`resolve_global`."""

    def find_class(self, module: str, name: str) -> Any:
        return resolve_global(module, name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


#: A module-like object for ``torch.load(..., pickle_module=...)``.
RESTRICTED_PICKLE = types.ModuleType("avel_restricted_pickle")
RESTRICTED_PICKLE.Unpickler = RestrictedUnpickler
RESTRICTED_PICKLE.load = _restricted_load
RESTRICTED_PICKLE.UnpicklingError = pickle.UnpicklingError


@dataclass
class ReleaseCheckpoint:
    """What a release checkpoint holds: tensors by dotted name, the root class and its attributes."""

    path: Path
    sha256: str
    format: str  # "legacy" (torch < 1.6, the release) or "zip"
    release_class: str | None  # e.g. "models.att_Net"; None for a pickled state dict
    tensors: dict[str, torch.Tensor]
    attributes: dict[str, Any] = field(default_factory=dict)


def load_restricted(path: str | Path) -> Any:
    """Unpickle a torch file (legacy or zip) with the allow-list; tensors land on the CPU."""
    path = Path(path)
    with warnings.catch_warnings():
        # torch compares the pickled class source with ours, and warns on every difference
        warnings.filterwarnings("ignore", category=torch.serialization.SourceChangeWarning)
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        try:
            return torch.load(
                path, map_location="cpu", pickle_module=RESTRICTED_PICKLE, weights_only=False
            )
        except ReleaseCheckpointError as exc:
            raise ReleaseCheckpointError(f"{path}: {exc}") from None
        except (
            pickle.UnpicklingError,
            RuntimeError,
            EOFError,
            OSError,
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
            IndexError,
        ) as exc:
            raise ReleaseCheckpointError(
                f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})"
            ) from exc


def _tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, _LegacyParameter):
        value = value.data
    if not isinstance(value, torch.Tensor):
        raise ReleaseCheckpointError(f"{name} holds {type(value).__name__}, not a tensor")
    return value.detach()


def flatten_module(root: ReleaseModule) -> dict[str, torch.Tensor]:
    """``{dotted.name: tensor}`` from ``_parameters`` and ``_buffers``, through ``_modules``."""
    out: dict[str, torch.Tensor] = {}
    stack: list[tuple[str, ReleaseModule]] = [("", root)]
    seen: set[int] = set()
    while stack:
        prefix, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        state = module.__dict__
        for key in ("_parameters", "_buffers"):
            for name, value in (state.get(key) or {}).items():
                if value is not None:
                    out[prefix + name] = _tensor(value, prefix + name)
        children = list((state.get("_modules") or {}).items())
        for name, child in reversed(children):
            if child is None:
                continue
            if not isinstance(child, ReleaseModule):
                raise ReleaseCheckpointError(
                    f"submodule {prefix + name} is a {type(child).__name__}, not a module"
                )
            stack.append((f"{prefix}{name}.", child))
    return dict(sorted(out.items()))


def read_release_checkpoint(path: str | Path) -> ReleaseCheckpoint:
    """Read a whole-module pickle (or a pickled state dict) into a :class:`ReleaseCheckpoint`."""
    path = Path(path)
    if not path.is_file():
        raise ReleaseCheckpointError(
            f"{path}: not found; the release's trained models are model/AV_att.pt, "
            "model/AV_att_weak.pt and DMRN.pt (see docs/training.md: released trained models)"
        )
    import zipfile

    fmt = "zip" if zipfile.is_zipfile(path) else "legacy"
    obj = load_restricted(path)
    if isinstance(obj, ReleaseModule):
        tensors = flatten_module(obj)
        attributes = {
            k: v
            for k, v in obj.__dict__.items()
            if not k.startswith("_") and isinstance(v, bool | int | float | str)
        }
        release_class = obj.release_class
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        tensors = {str(k): v.detach() for k, v in obj.items()}
        attributes, release_class = {}, None
    else:
        raise ReleaseCheckpointError(
            f"{path}: holds a {type(obj).__name__}, neither a pickled network nor a state dict"
        )
    if not tensors:
        raise ReleaseCheckpointError(f"{path}: the pickled {release_class} holds no tensors")
    return ReleaseCheckpoint(path, sha256_file(path), fmt, release_class, tensors, attributes)
