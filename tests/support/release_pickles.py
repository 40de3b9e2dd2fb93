"""Release-style networks and PyTorch-0.3-style whole-module pickles of them, for the import tests.

The classes compute what the AVE release's ``att_Net`` (``models.py``, ``models_weakly.py``) and
``TBMRF_Net`` (``models_fusion.py``) compute, quirks included, with the release's submodule names.
``save_release_pickle`` writes them the way ``torch.save(model)`` did under PyTorch 0.3: the legacy
(non-zip) format, the class recorded under the release's module path (``models.att_Net``...),
parameters pickled as calls of ``torch.nn.parameter.Parameter``, tensors rebuilt by
``torch._utils._rebuild_tensor``, a ``_backend`` object reduced to
``torch.nn.backends.thnn._get_thnn_function_backend``, LSTMs carrying an ``Unserializable``
dropout descriptor and their weights stored as views into one flat buffer (cuDNN).
"""

from __future__ import annotations

import contextlib
import copyreg
import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class _AudioGuidedAttentionRelease(nn.Module):
    """Shared pieces of the release networks: the attention (release broadcast) and the LSTMs."""

    def _build_encoders(self) -> None:
        self.hidden_dim = 128
        self.lstm_audio = nn.LSTM(128, 128, 1, batch_first=True, bidirectional=True)
        self.lstm_video = nn.LSTM(512, 128, 1, batch_first=True, bidirectional=True)
        self.relu = nn.ReLU()
        self.affine_audio = nn.Linear(128, 512)
        self.affine_video = nn.Linear(512, 512)
        self.affine_v = nn.Linear(512, 49, bias=False)
        self.affine_g = nn.Linear(512, 49, bias=False)
        self.affine_h = nn.Linear(49, 1, bias=False)

    def encode(self, audio: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,10,128) audio and (B,10,7,7,512) maps -> the two LSTM output sequences (B,10,256)."""
        b, t = audio.shape[:2]
        regions = video.reshape(b * t, -1, 512)
        hidden_v = self.relu(self.affine_video(regions))  # (BT, 49, 512)
        hidden_a = self.relu(self.affine_audio(audio.reshape(b * t, -1)))  # (BT, 512)
        # the release's quirk: audio hidden unit i is added to every hidden unit of region i
        content = self.affine_v(hidden_v) + self.affine_g(hidden_a).unsqueeze(2)
        alpha = F.softmax(self.affine_h(torch.tanh(content)).squeeze(2), dim=-1)
        attended = torch.bmm(alpha.unsqueeze(1), regions).reshape(b, t, 512)
        h_a, _ = self.lstm_audio(audio)
        h_v, _ = self.lstm_video(attended)
        return h_a, h_v


class att_Net(_AudioGuidedAttentionRelease):  # noqa: N801 - the release's class name
    """A+V-att: concat -> ReLU -> L1 -> ReLU -> L2 -> softmax per second."""

    def __init__(self) -> None:
        super().__init__()
        self._build_encoders()
        self.L1 = nn.Linear(512, 64)
        self.L2 = nn.Linear(64, 29)

    def scores(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        h_a, h_v = self.encode(audio, video)
        return self.L2(self.relu(self.L1(self.relu(torch.cat((h_a, h_v), -1)))))

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.scores(audio, video), dim=-1)


class WeakAttNet(att_Net):
    """``models_weakly.att_Net``: softmax of the max over time, and the per-second scores."""

    def forward(self, audio: torch.Tensor, video: torch.Tensor):  # type: ignore[override]
        score = self.scores(audio, video)
        return F.softmax(score.max(dim=1).values, dim=-1), score


class TBMRF_Net(_AudioGuidedAttentionRelease):  # noqa: N801 - the release's class name
    """DMRN: ``nb_block`` applications of one shared block with swapped residuals, L2, softmax."""

    def __init__(self, nb_block: int = 1) -> None:
        super().__init__()
        self.tanh = nn.Tanh()
        self._build_encoders()
        self.nb_block = nb_block
        self.U_v = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 256))
        self.U_a = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 256))
        self.L2 = nn.Linear(256, 29)

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        a, v = self.encode(audio, video)
        for _ in range(self.nb_block):
            merged = (self.U_v(v) + self.U_a(a)) * 0.5
            # the release's swap: the audio residual feeds the visual branch and vice versa
            v, a = self.tanh(a + merged), self.tanh(v + merged)
        return F.softmax(self.L2((v + a) * 0.5), dim=-1)


# --- PyTorch 0.3 pickling ---------------------------------------------------------------------


class _Backend:
    """Stands for 0.3's ``THNNFunctionBackend``, which pickled as a call of the getter."""


def _thnn_getter():  # replaced by torch.nn.backends.thnn._get_thnn_function_backend when saved
    return None


class Unserializable:
    """0.3's ``torch.nn._functions.rnn.Unserializable`` (cuDNN dropout descriptor holder)."""

    def __getstate__(self):
        return "<unserializable>"


class Evil:
    """Reduces to a call of an arbitrary global: ``os.system`` by default."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _state_03(module: nn.Module) -> dict:
    state = {
        "_backend": _Backend(),
        "_parameters": OrderedDict(module._parameters),
        "_buffers": OrderedDict(module._buffers),
        "_backward_hooks": OrderedDict(),
        "_forward_hooks": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(),
        "_modules": OrderedDict(module._modules),
        "training": module.training,
    }
    state.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    if isinstance(module, nn.LSTM):
        state["dropout_state"] = {"desc_0": Unserializable()}
        state["_all_weights"] = [list(w) for w in module._all_weights]
        state["_data_ptrs"] = []
    return state


class Pickler03(pickle.Pickler):
    """Pickles modules, parameters and tensors the way PyTorch 0.3 did."""

    def reducer_override(self, obj):
        if isinstance(obj, nn.Parameter):
            return (nn.Parameter, (obj.data,), (obj.requires_grad, False, OrderedDict()))
        if isinstance(obj, torch.Tensor):
            storage = torch.storage.TypedStorage(
                wrap_storage=obj.untyped_storage(), dtype=obj.dtype, _internal=True
            )
            return (
                torch._utils._rebuild_tensor,
                (storage, obj.storage_offset(), tuple(obj.size()), obj.stride()),
            )
        if isinstance(obj, nn.Module):
            return (copyreg.__newobj__, (type(obj),), _state_03(obj))
        if isinstance(obj, _Backend):
            import torch.nn.backends.thnn as thnn

            return (thnn._get_thnn_function_backend, ())
        return NotImplemented


PICKLE_03 = types.ModuleType("pickle_03")
PICKLE_03.Pickler = Pickler03
PICKLE_03.dump = pickle.dump


@contextlib.contextmanager
def release_names(cls: type, module_name: str, class_name: str) -> Iterator[None]:
    """While saving: ``cls`` is ``module_name.class_name`` (as in the release), and 0.3's
    ``torch.nn._functions.rnn`` exists; ``sys.modules`` and the class are restored afterwards
    (our own package is also called ``models``)."""
    saved_modules = {
        n: sys.modules.get(n)
        for n in (module_name, "torch.nn._functions", "torch.nn._functions.rnn")
    }
    saved_names = (cls.__module__, cls.__qualname__, cls.__name__)
    saved_unser = (Unserializable.__module__, Unserializable.__qualname__)
    try:
        release_module = types.ModuleType(module_name)
        release_module.__file__ = __file__  # so torch records the class source, as 0.3 did
        setattr(release_module, class_name, cls)
        sys.modules[module_name] = release_module
        rnn = types.ModuleType("torch.nn._functions.rnn")
        rnn.Unserializable = Unserializable
        sys.modules.setdefault("torch.nn._functions", types.ModuleType("torch.nn._functions"))
        sys.modules["torch.nn._functions.rnn"] = rnn
        cls.__module__, cls.__qualname__, cls.__name__ = module_name, class_name, class_name
        Unserializable.__module__ = "torch.nn._functions.rnn"
        yield
    finally:
        cls.__module__, cls.__qualname__, cls.__name__ = saved_names
        Unserializable.__module__, Unserializable.__qualname__ = saved_unser
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


RELEASE_PATHS = {
    "av_att": (att_Net, "models", "att_Net"),
    "av_att_weak": (WeakAttNet, "models_weakly", "att_Net"),
    "dmrn": (TBMRF_Net, "models_fusion", "TBMRF_Net"),
}


def _flat_lstm_weights(lstm: nn.LSTM) -> None:
    """Make the LSTM's parameters views into one buffer, as cuDNN's ``flatten_parameters`` did."""
    params = list(lstm.parameters())
    flat = torch.cat([p.data.reshape(-1) for p in params])
    offset = 0
    for p in params:
        p.data = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()


def release_network(arch: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    net = RELEASE_PATHS[arch][0](**kwargs).eval()
    _flat_lstm_weights(net.lstm_audio)
    _flat_lstm_weights(net.lstm_video)
    return net


def save_release_pickle(net: nn.Module, path: Path, arch: str, zip_format: bool = False) -> Path:
    """``torch.save(net)`` as the release did (0.3 legacy format), or a modern zip whole-module file."""
    cls, module_name, class_name = RELEASE_PATHS[arch]
    if not isinstance(net, cls):
        raise TypeError(f"{arch} pickles a {cls.__name__}")
    with release_names(type(net), module_name, class_name):
        if zip_format:
            torch.save(net, path)
        else:
            torch.save(
                net,
                path,
                pickle_module=PICKLE_03,
                pickle_protocol=2,
                _use_new_zipfile_serialization=False,
            )
    return path
