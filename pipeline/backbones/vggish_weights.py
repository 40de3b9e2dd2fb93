"""VGGish weights: convert the official TF-slim checkpoint once into a cached torch state dict,
record where it came from, and load it. Reading the checkpoint needs TensorFlow (the ``tf``
extra), in a child process; loading the converted file does not.

The record (:class:`WeightsInfo`) carries the weights' identity and the preprocessing and output
mode that go with them, and is what feature stores embed in their metadata.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

from pipeline.backbones.tf_checkpoint import TFCheckpointError, read_variables
from pipeline.backbones.vggish_frontend import FRAMINGS, frontend_description
from pipeline.backbones.vggish_model import LAYERS, NUM_PARAMETERS, OUTPUTS, Postprocessor, VGGish
from pipeline.core.fetch import SourceError, fetch, is_url, sha256_file
from pipeline.core.io import atomic_path, write_json
from pipeline.core.layout import DataLayout

VGGISH_CHECKPOINT_URL = "https://storage.googleapis.com/audioset/vggish_model.ckpt"
VGGISH_PCA_PARAMS_URL = "https://storage.googleapis.com/audioset/vggish_pca_params.npz"
CONVERTED_NAME = "vggish_model.pt"
FORMAT = "avel-vggish-torch-state-dict-v1"
RANDOM = "random"


class VGGishWeightsError(RuntimeError):
    """The VGGish weights could not be found, fetched, read or verified."""


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """Identity of a VGGish weight set plus the preprocessing and output mode used with it.

    ``source``: URL or path of the original checkpoint, or "random". ``sha256``: of the converted
    torch file (or "random"); ``source_sha256``: of the original checkpoint.
    """

    source: str
    sha256: str
    source_sha256: str | None = None
    output: str = "ave"
    framing: str = "ave"
    pca_sha256: str | None = None
    seed: int | None = None
    path: Path | None = None

    @property
    def is_random(self) -> bool:
        return self.source == RANDOM

    def with_mode(
        self, output: str = "ave", framing: str = "ave", pca_params: str | os.PathLike | None = None
    ) -> WeightsInfo:
        """The same weights used with another output mode / framing (pca needs its params file)."""
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
        if output == "pca" and pca_params is None and self.pca_sha256 is None:
            raise ValueError("output='pca' needs the PCA parameters file (vggish_pca_params.npz)")
        pca_sha = sha256_file(pca_params) if pca_params is not None else self.pca_sha256
        return dataclasses.replace(
            self, output=output, framing=framing, pca_sha256=pca_sha if output == "pca" else None
        )

    def to_dict(self) -> dict:
        """JSON-ready metadata record (what a feature store writes)."""
        return {
            "backbone": "vggish",
            "weights": {
                "source": self.source,
                "sha256": self.sha256,
                "source_sha256": self.source_sha256,
                "random": self.is_random,
                "seed": self.seed,
            },
            "output": self.output,
            "output_meaning": _OUTPUT_MEANING[self.output],
            "pca_sha256": self.pca_sha256,
            "preprocessing": frontend_description(self.framing),
        }

    def describe(self) -> str:
        """One line for summaries; random weights are said loudly."""
        if self.is_random:
            return f"VGGish with RANDOM weights (seed {self.seed}): NOT pretrained features"
        return f"VGGish weights {self.source} (sha256 {self.sha256[:12]}), output {self.output}"


_OUTPUT_MEANING = {
    "ave": "ReLU(fc2), as in the AVE release",
    "raw": "fc2 without activation, as current upstream VGGish",
    "pca": "AudioSet PCA postprocessing, uint8",
}


def default_cache_dir(data_dir: str | os.PathLike) -> Path:
    """Where the converted weights live for a data directory: DATA_DIR/weights/vggish."""
    return DataLayout(data_dir).weights("vggish")


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    """TF variable name -> shape, read off the torch model's parameters."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = VGGish()
    shapes = {}
    for module_name, (scope, kind) in LAYERS.items():
        layer = getattr(model, module_name)
        w = tuple(layer.weight.shape)
        shapes[f"{scope}/weights"] = (w[2], w[3], w[1], w[0]) if kind == "conv" else (w[1], w[0])
        shapes[f"{scope}/biases"] = tuple(layer.bias.shape)
    return shapes


def read_tf_checkpoint(ckpt_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The 18 VGGish variables of a TF checkpoint (V1 file or V2 prefix), checked by name and shape.

    TensorFlow reads it in a child process (:mod:`pipeline.backbones.tf_checkpoint`): it must never
    share this process with torch's compiler stack."""
    expected = _expected_shapes()
    try:
        variables, available = read_variables(ckpt_path, list(expected))
    except TFCheckpointError as exc:
        if exc.kind == "no_tensorflow":
            raise VGGishWeightsError(
                "reading the VGGish TF checkpoint needs TensorFlow: pip install 'avel[tf]' "
                "(only for this one-time conversion; extraction afterwards does not need it)"
            ) from exc
        raise VGGishWeightsError(
            f"{ckpt_path}: not a readable TF checkpoint ({exc}). "
            f"Fetch the official file again from {VGGISH_CHECKPOINT_URL}"
        ) from exc
    problems = []
    for name, shape in expected.items():
        if name not in available:
            problems.append(f"missing {name}")
        elif tuple(available[name]) != shape:
            problems.append(f"{name} has shape {tuple(available[name])}, expected {shape}")
    if problems:
        raise VGGishWeightsError(f"{ckpt_path}: not the VGGish checkpoint: " + "; ".join(problems))
    return variables


def tf_to_torch_state_dict(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map TF-slim variables onto :class:`VGGish` parameter names and layouts."""
    state = {}
    for module_name, (scope, kind) in LAYERS.items():
        w = variables[f"{scope}/weights"]
        w = w.transpose(3, 2, 0, 1) if kind == "conv" else w.T  # HWIO -> OIHW; (in,out) -> (out,in)
        state[f"{module_name}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        state[f"{module_name}.bias"] = torch.from_numpy(variables[f"{scope}/biases"].copy())
    return state


def convert_tf_checkpoint(
    ckpt_path: str | os.PathLike, out_path: str | os.PathLike, source: str | None = None
) -> str:
    """Convert a VGGish TF checkpoint into a torch state dict at ``out_path`` (atomically).

    Writes ``<out_path>.json`` beside it (source, sha256s, format). Returns the sha256 of the
    written torch file.
    """
    out_path = Path(out_path)
    state = tf_to_torch_state_dict(read_tf_checkpoint(ckpt_path))
    with torch.device("meta"):
        VGGish().load_state_dict(state, assign=True)  # structural check before writing
    with atomic_path(out_path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    digest = sha256_file(out_path)
    write_json(
        {
            "format": FORMAT,
            "source": source or str(Path(ckpt_path).resolve()),
            "source_sha256": sha256_file(ckpt_path, parts=True),
            "sha256": digest,
            "parameters": NUM_PARAMETERS,
        },
        _record_path(out_path),
    )
    return digest


def _record_path(pt_path: Path) -> Path:
    return pt_path.with_suffix(".json")


def _read_record(pt_path: Path) -> dict | None:
    record = _record_path(pt_path)
    if not (pt_path.is_file() and record.is_file()):
        return None
    try:
        data = json.loads(record.read_text())
    except json.JSONDecodeError:
        return None
    return data if data.get("format") == FORMAT else None


def _cached_info(pt_path: Path) -> WeightsInfo | None:
    """The converted weights at ``pt_path`` if present and intact (sha256 matches its record)."""
    record = _read_record(pt_path)
    if record is None or sha256_file(pt_path) != record.get("sha256"):
        return None
    return WeightsInfo(
        source=record["source"],
        sha256=record["sha256"],
        source_sha256=record.get("source_sha256"),
        path=pt_path,
    )


def _missing_message(cache_dir: Path, reason: str = "") -> str:
    return (
        f"No VGGish weights{': ' + reason if reason else ''}. No converted weights in {cache_dir}. "
        f"Download the official checkpoint {VGGISH_CHECKPOINT_URL} and pass it "
        "(e.g. `avel convert-vggish --data-dir DATA_DIR --checkpoint vggish_model.ckpt`, "
        "needs the `tf` extra), or allow the download. To run without pretrained weights "
        "(smoke runs only; features are marked random), pass --allow-random-weights."
    )


def ensure_vggish_weights(
    cache_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> WeightsInfo:
    """Converted VGGish weights in ``cache_dir``, making them if needed; ``info.path`` is the file.

    With ``checkpoint`` (local path or URL): reuse the cache when it was converted from a file
    with the same sha256, else convert it. Without: reuse any intact cache, else download the
    official checkpoint (when ``allow_download``) and convert it. Raises
    :class:`VGGishWeightsError` with instructions when no weights can be had.
    """
    cache_dir = Path(cache_dir)
    pt_path = cache_dir / CONVERTED_NAME
    if checkpoint is None:
        cached = _cached_info(pt_path)
        if cached is not None:
            return cached
        if not allow_download:
            raise VGGishWeightsError(_missing_message(cache_dir, "downloading is disabled"))
        checkpoint = VGGISH_CHECKPOINT_URL
    checkpoint = str(checkpoint)
    if is_url(checkpoint):
        if not allow_download:
            raise VGGishWeightsError(_missing_message(cache_dir, "downloading is disabled"))
        try:
            local = fetch(checkpoint, cache_dir)
        except SourceError as exc:
            raise VGGishWeightsError(_missing_message(cache_dir, str(exc))) from exc
        source = checkpoint
    else:
        local = Path(checkpoint).expanduser()
        if not (local.is_file() or any(local.parent.glob(local.name + ".index"))):
            raise VGGishWeightsError(_missing_message(cache_dir, f"{local}: file not found"))
        source = str(local.resolve())
    cached = _cached_info(pt_path)
    if cached is not None and cached.source_sha256 == sha256_file(local, parts=True):
        return cached
    convert_tf_checkpoint(local, pt_path, source=source)
    info = _cached_info(pt_path)
    assert info is not None
    return info


def load_vggish(path: str | os.PathLike, pca_params: str | os.PathLike | None = None) -> VGGish:
    """A :class:`VGGish` with the converted weights at ``path`` (checked against its JSON record
    when present); ``pca_params`` attaches the PCA postprocessor for ``output="pca"``."""
    path = Path(path)
    if not path.is_file():
        raise VGGishWeightsError(f"{path}: converted VGGish weights not found")
    record = _read_record(path)
    digest = sha256_file(path)
    if record is not None and record.get("sha256") != digest:
        raise VGGishWeightsError(
            f"{path}: sha256 {digest} does not match its record {_record_path(path)}; "
            "the file is corrupt: delete both and convert the checkpoint again"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VGGishWeightsError(f"{path}: not a readable torch state dict ({exc})") from exc
    with torch.device("meta"):  # skip the random initialisation the weights replace
        model = VGGish()
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as exc:
        raise VGGishWeightsError(f"{path}: not VGGish weights ({exc})") from exc
    info = WeightsInfo(
        source=record["source"] if record else str(path.resolve()),
        sha256=digest,
        source_sha256=record.get("source_sha256") if record else None,
        path=path,
    )
    return _attach(model, info, pca_params)


def random_vggish(seed: int = 0, pca_params: str | os.PathLike | None = None) -> VGGish:
    """A VGGish with seeded random weights, marked random (for --allow-random-weights smoke runs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VGGish()
        # He initialisation keeps the activations' scale through the 9 layers; PyTorch's default
        # init shrinks them until every clip gets nearly the same embedding (a useless smoke run).
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                torch.nn.init.zeros_(module.bias)
    return _attach(model, WeightsInfo(source=RANDOM, sha256=RANDOM, seed=seed), pca_params)


def _attach(model: VGGish, info: WeightsInfo, pca_params: str | os.PathLike | None) -> VGGish:
    model.to(memory_format=torch.channels_last)  # with channels-last activations: 1.15x on the CPU
    if pca_params is not None:
        model.postprocessor = Postprocessor(pca_params)
        info = dataclasses.replace(info, pca_sha256=sha256_file(pca_params))
    model.weights_info = info
    return model
