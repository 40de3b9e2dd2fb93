"""The backbone protocol: what a feature network declares to the extraction driver.

A backbone is one module with one :class:`Backbone` subclass, registered by one line in
:data:`BACKBONE_MODULES`. It declares

- its input (:attr:`Backbone.inputs`): the segments stage's log-mel ``patches`` (10, 96, 64),
  ``frames`` decoded from the clip at :meth:`Backbone.frame_size` following
  :meth:`Backbone.frame_plans` (every backbone that asks for frames shares one decoding pass per
  clip: :func:`decode_inputs`), or the clip's audio as a mono float32 ``waveform`` (10, rate) at
  :meth:`Backbone.sample_rate`; :func:`input_request` and :func:`input_shapes` describe any of them
  to the executors (the Ray executor needs fixed per-clip shapes);
- the stores it writes with their row shapes, and the stores derived from them
  (:class:`StoreSpec`: the spatial mean of another store's rows, :func:`spatial_mean`);
- its identity: weights and their sha256, preprocessing, precision and its other settings
  (:meth:`Backbone.identity`), which decides whether a finished store may be reused;
- one batch -> arrays function (:meth:`Backbone.run`: decoded inputs of some clips -> per clip one
  array per store it computes).

The extraction driver and its executors (``pipeline.stages.features``) know no backbone by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline.core.manifest import CLIP_SECONDS

#: The ``--features`` word of each backbone -> the module that defines it (its ``BACKBONE`` class).
BACKBONE_MODULES = {
    "audio": "pipeline.backbones.vggish_backbone",
    "visual": "pipeline.backbones.vgg19_backbone",
    "c3d": "pipeline.backbones.c3d_backbone",
    "clip": "pipeline.backbones.clip_backbone",
    "clap": "pipeline.backbones.clap_backbone",
}
#: Key of the log-mel patches in a clip's decoded inputs.
PATCHES = "patches"
#: The input kinds a backbone may declare.
INPUT_KINDS = ("patches", "frames", "waveform")


@dataclass(frozen=True)
class Request:
    """What one backbone needs decoded from a clip: ``frames`` at ``size`` (width, height) in the
    order of its frame plan, or the audio as a mono float32 ``waveform`` at ``rate`` samples per
    second, (10, rate) (the clip's first 10 s, zero-padded)."""

    kind: str
    size: tuple[int, int] = (0, 0)
    rate: int = 0
    #: Frames that the backbone's own image preprocessing brings to ``size``: the planned frames
    #: are decoded at their own size and ``prepare(frames)`` (a list of uint8 (H, W, 3)) returns
    #: them as uint8 (N, height, width, 3); run in the decoder process. None: ffmpeg scales.
    prepare: Callable[[list[np.ndarray]], np.ndarray] | None = field(default=None, compare=False)

    def shape(self, planned: int = 0) -> tuple[int, ...]:
        """The decoded array's shape for a clip (``planned``: frames in its plan)."""
        if self.kind == "waveform":
            return (CLIP_SECONDS, self.rate)
        w, h = self.size
        return (planned, h, w, 3)

    @property
    def dtype(self) -> type:
        return np.float32 if self.kind == "waveform" else np.uint8


@dataclass(frozen=True)
class StoreSpec:
    """One store a backbone fills: its row shape and, for a derived store, the store it is the
    spatial mean of (computed by the driver, never by the network)."""

    row: tuple[int, ...]
    derived_from: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class BackboneError(RuntimeError):
    """A backbone cannot run as asked (missing weights, a precision the device lacks, ...)."""


class Backbone:
    """Base of every backbone. Subclasses set the class attributes and implement the methods.

    ``settings`` is the features stage's config (read for the options the backbone declares);
    ``weights_dir`` is the backbone's weights cache (``DATA_DIR/weights/<network>``);
    ``frames_per_segment`` the segments' F. The network
    is built by :meth:`prepare` (in the driver: weights identity and precision) and again by
    :meth:`load` in an executor process that received the backbone without it.
    """

    kind: ClassVar[str]  # the --features word
    network: ClassVar[str]  # weights cache name and short label
    inputs: ClassVar[str]  # "patches" or "frames"

    def __init__(self, settings: Any, weights_dir: Path, frames_per_segment: int = 16) -> None:
        self.settings = settings
        self.frames_per_segment = frames_per_segment
        self.weights_dir = Path(weights_dir)
        self.model: Any = None
        self.device = "cpu"
        self.precision = "fp32"
        self.probe: dict[str, Any] | None = None
        self.record: dict[str, Any] = {}
        self.random = False  # RANDOM weights (smoke runs): said loudly in every summary
        self.advice = ""  # one line of precision advice for the summary
        self.weights_line = ""  # one line naming the weights for the summary

    # ------------------------------------------------------------------ declarations
    def stores(self) -> dict[str, StoreSpec]:
        """Every store this backbone fills with the current settings, primary and derived."""
        raise NotImplementedError

    def outputs(self) -> dict[str, tuple[int, ...]]:
        """The arrays :meth:`run` returns per clip, with their shapes: the primary stores."""
        return {n: s.row for n, s in self.stores().items() if s.derived_from is None}

    def probe_key(self) -> str:
        """What the measured precision figures depend on besides the device."""
        return self.network

    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the frames it needs decoded (``frames`` backbones)."""
        raise NotImplementedError

    def frame_plans(self, segments: Any) -> dict[str, np.ndarray]:
        """Clip ID -> the frame indices (any shape) it needs, from the segments table or its
        :class:`~pipeline.core.clip_rows.ClipRows` (``ClipRows.of`` gives the latter either way)."""
        raise NotImplementedError

    def frame_preparer(self) -> Callable[[list[np.ndarray]], np.ndarray] | None:
        """Its own image preprocessing to :meth:`frame_size` (``Request.prepare``), or None:
        the whole frame scaled by ffmpeg (bilinear, the aspect ratio not kept)."""
        return None

    def sample_rate(self) -> int:
        """Samples per second of the waveform it needs (``waveform`` backbones)."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What makes its features what they are (after :meth:`prepare`): compared on reuse."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Store metadata beyond the identity (full weights record, probe figures, ...)."""
        return {"weights_record": self.record, "precision_probe": self.probe}

    def clips_per_batch(self) -> int:
        """Clips handed to one :meth:`run` call."""
        return 1

    # ------------------------------------------------------------------ work
    def prepare(self, device: str) -> None:
        """Build the network with its weights (a :class:`BackboneError` when they are missing) and
        settle the precision on ``device``."""
        raise NotImplementedError

    def load(self, device: str) -> None:
        """Put the network on ``device`` in this process (building it again if it travelled
        without it)."""
        raise NotImplementedError

    def settle_precision(
        self,
        device: str,
        probe: Any,
        known: dict[str, Any] | None,
        reduced: str | None = None,
    ) -> None:
        """Set :attr:`precision` (and the probe figures and advice) from the asked precision
        (:func:`pipeline.backbones.precision.decide_precision`); one the device lacks is a
        :class:`BackboneError`."""
        from pipeline.backbones.precision import decide_precision

        try:
            self.precision, self.probe, self.advice = decide_precision(
                self.settings.precision, device, probe, known, reduced=reduced
            )
        except ValueError as exc:
            raise BackboneError(str(exc)) from exc

    def run(self, clips: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Decoded inputs of some clips -> per clip one float32 array per primary store."""
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["model"] = None  # executors in other processes build their own copy
        return state


class RecordedNetwork(Backbone):
    """A backbone whose weights come as a record (VGG-19, C3D): ``name``, ``source``/``url``,
    ``sha256`` ("random" for random weights), ``is_random``, ``meta()`` with ``preprocessing``.
    Subclasses set :attr:`backbone_line`, :attr:`memory_format`, :attr:`named_weights` and give
    :meth:`weights_setting` and :meth:`build_network`."""

    backbone_line: ClassVar[str]  # what the store's ``backbone`` says
    memory_format: ClassVar[str]  # torch memory format of the network ("channels_last", ...)
    named_weights: ClassVar[tuple[str, ...]]  # named pretrained weights (random when missing)

    def weights_setting(self) -> str:
        """The weights asked for (a name, a file or a URL)."""
        raise NotImplementedError

    def build_network(self, weights: str, allow_random: bool) -> tuple[Any, Any]:
        """(network, weights record) for ``weights`` (raises the backbones' ``WeightsError``)."""
        raise NotImplementedError

    def _build(self) -> tuple[Any, Any]:
        from pipeline.backbones.vgg19 import WeightsError

        name, allow = self.weights_setting(), self.settings.allow_random_weights
        try:
            return self.build_network(name, allow)
        except WeightsError as exc:
            if not (name in self.named_weights and allow):
                raise BackboneError(str(exc)) from exc
            return self.build_network("random", True)

    def adopt(self, model: Any, weights: Any) -> None:
        """Take ``model`` with its weights record."""
        self.model, self.weights = model, weights
        self.record, self.random = weights.meta(), bool(weights.is_random)
        source = weights.source or weights.name
        self.weights_line = f"{self.network} {source} sha256 {str(weights.sha256)[:12]}"

    @classmethod
    def from_network(
        cls, model: Any, weights: Any, precision: str, frames_per_segment: int = 16, **settings: Any
    ) -> RecordedNetwork:
        """A backbone around a network already built (``settings``: the options it reads)."""
        from types import SimpleNamespace

        backbone = cls(SimpleNamespace(**settings), Path("."), frames_per_segment)
        backbone.adopt(model, weights)
        backbone.precision = precision
        return backbone

    def identity(self) -> dict[str, Any]:
        w = self.weights
        return {
            "backbone": self.backbone_line,
            "weights": weights_identity(w.source or w.url or w.name, w.sha256),
            "preprocessing": self.record.get("preprocessing"),
            "precision": self.precision,
        }

    def load(self, device: str) -> None:
        import torch

        if self.model is None:
            self.adopt(*self._build())
        self.device = device
        layout = getattr(torch, self.memory_format)
        self.model = self.model.to(device, memory_format=layout).eval()


def backbone_class(kind: str) -> type[Backbone]:
    """The registered backbone of a ``--features`` word."""
    if kind not in BACKBONE_MODULES:
        raise BackboneError(f"no backbone for {kind!r}; known: {', '.join(BACKBONE_MODULES)}")
    return importlib.import_module(BACKBONE_MODULES[kind]).BACKBONE


def input_request(backbone: Backbone) -> Request | None:
    """What ``backbone`` needs decoded from the clip (None: it reads the patches files)."""
    if backbone.inputs == "frames":
        return Request(
            "frames", size=tuple(backbone.frame_size()), prepare=backbone.frame_preparer()
        )
    if backbone.inputs == "waveform":
        return Request("waveform", rate=int(backbone.sample_rate()))
    return None


def input_shapes(
    backbones: Sequence[Backbone], planned: dict[str, int]
) -> dict[str, tuple[tuple[int, ...], type]]:
    """Key of each decoded input of a clip -> its fixed (shape, dtype) (``planned``: network ->
    frames in its plan)."""
    shapes: dict[str, tuple[tuple[int, ...], type]] = {}
    for b in backbones:
        request = input_request(b)
        if request is None:
            shapes[PATCHES] = ((CLIP_SECONDS, 96, 64), np.float32)
        else:
            shapes[b.network] = (request.shape(planned.get(b.network, 0)), request.dtype)
    return shapes


def weights_identity(source: Any, sha256: Any) -> dict[str, Any]:
    """The weights part of an identity: sha256 decides, the source is for people."""
    return {"source": None if source is None else str(source), "sha256": sha256}


# ----------------------------------------------------------------------------- pooling


def per_second_mean(y: Any, per_second: int) -> Any:
    """Network outputs (10 F, C, H, W) of a clip's planned frames in plan order -> the mean of each
    second's F maps, (10, H, W, C) float32 (a torch tensor, on the outputs' device)."""
    import torch

    seconds = torch.arange(len(y), device=y.device) // per_second
    sums = torch.zeros((CLIP_SECONDS, *y.shape[1:]), dtype=torch.float32, device=y.device)
    sums.index_add_(0, seconds, y.float())
    return (sums / per_second).permute(0, 2, 3, 1)


def spatial_mean(maps: np.ndarray) -> np.ndarray:
    """Maps (..., H, W, C) -> their spatial mean (..., C), accumulated in float64 (the release's
    ``visual_feature_vec`` is the 7x7 mean of the pool5 maps)."""
    maps = np.asarray(maps)
    return maps.mean(axis=(-3, -2), dtype=np.float64).astype(np.float32)


def derive(stores: dict[str, StoreSpec], primary: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every store's row from one clip's primary outputs (derived stores by :func:`spatial_mean`)."""
    out = {}
    for name, spec in stores.items():
        out[name] = spatial_mean(primary[spec.derived_from]) if spec.derived_from else primary[name]
    return out


def frame_plans(segments: Any) -> dict[str, np.ndarray]:
    """Clip ID -> its (10, F) planned frame indices, from the segments table (or its
    :class:`~pipeline.core.clip_rows.ClipRows`)."""
    from pipeline.core.clip_rows import ClipRows

    return ClipRows.of(segments).frame_plans()


def run_in_batches(
    model: Any, x: Any, batch: int, precision: str, preprocess: Any, memory_format: Any
) -> Any:
    """``model`` over ``preprocess(chunk)`` for chunks of ``batch`` inputs of ``x``, under autocast
    for bf16/fp16; the float32 outputs concatenated."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    out = []
    for start in range(0, len(x), batch):
        chunk = preprocess(x[start : start + batch]).contiguous(memory_format=memory_format)
        with torch.autocast(chunk.device.type, dtype=dtype, enabled=dtype is not None):
            out.append(model(chunk).float())
    return torch.cat(out)


# ----------------------------------------------------------------------------- decoding


def decode_inputs(
    path: str | Path | None,
    patches: str | Path | None,
    requests: dict[str, tuple[np.ndarray | None, Request]],
) -> dict[str, np.ndarray]:
    """One clip's inputs for every backbone, the clip decoded once: ``requests`` maps a network to
    (frame indices, its :class:`Request`). Frames come back uint8 (N, height, width, 3) in the order
    of the indices (requests of the same size share one scaled output); waveforms float32
    (10, rate), one decode of the audio per rate. ``patches``: the segments stage's patches file,
    read as float32 (10, 96, 64)."""
    from pipeline.backbones.frames import (
        decode_planned,
        decode_planned_native,
        decode_planned_sizes,
    )
    from pipeline.backbones.waveform import decode_waveform

    out: dict[str, np.ndarray] = {}
    if patches is not None:
        try:
            loaded = np.load(patches)
        except (OSError, ValueError) as exc:
            raise ValueError(f"patches unreadable: {exc}") from exc
        if loaded.shape != (CLIP_SECONDS, 96, 64):
            raise ValueError(f"{patches}: patches of shape {loaded.shape}, expected (10, 96, 64)")
        out[PATCHES] = np.ascontiguousarray(loaded, dtype=np.float32)
    waves: dict[int, np.ndarray] = {}
    for name, (_, request) in requests.items():
        if request.kind == "waveform":
            if request.rate not in waves:
                waves[request.rate] = decode_waveform(path, request.rate)
            out[name] = waves[request.rate]
    frames = {n: r for n, r in requests.items() if r[1].kind == "frames"}
    if not frames:
        return out
    names = list(frames)
    flat = [np.asarray(frames[n][0], dtype=np.int64).reshape(-1) for n in names]
    scaled = [n for n in names if frames[n][1].prepare is None]
    sizes = list(dict.fromkeys(tuple(frames[n][1].size) for n in scaled))
    native: list[np.ndarray] = []
    if len(scaled) < len(names):
        decoded, native, inverse = decode_planned_native(path, np.concatenate(flat), sizes)
    elif len(sizes) == 1 and sizes[0][0] == sizes[0][1]:
        single, inverse = decode_planned(path, np.concatenate(flat), sizes[0][0])
        decoded = [single]
    else:
        decoded, inverse = decode_planned_sizes(path, np.concatenate(flat), sizes)
    start = 0
    for name, indices in zip(names, flat, strict=True):
        request = frames[name][1]
        if request.prepare is None:
            unique = decoded[sizes.index(tuple(request.size))]
        else:
            unique = np.asarray(request.prepare(native))
            width, height = request.size
            if unique.dtype != np.uint8 or unique.shape != (len(native), height, width, 3):
                raise ValueError(
                    f"{name}: prepared frames {unique.dtype} {unique.shape}, expected uint8 "
                    f"({len(native)}, {height}, {width}, 3)"
                )
        out[name] = np.ascontiguousarray(unique[inverse[start : start + len(indices)]])
        start += len(indices)
    return out
