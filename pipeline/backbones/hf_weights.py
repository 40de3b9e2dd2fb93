"""Hugging Face ``transformers`` weights for the foundation backbones (CLIP, CLAP) and their text
towers: a model id fetched once through the Hugging Face cache, or a local ``save_pretrained``
folder; identified by the sha256 of the weight files (and the hub revision when known).

Without weights the caller gets a :class:`~pipeline.backbones.base.BackboneError` naming what to
do, unless random weights are allowed: then a seeded random model is built from the model's config
(the folder's, or the hub cache's) or, when neither is at hand, from a small default config of the
same family, and marked RANDOM.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pipeline.backbones.base import Backbone, BackboneError

#: Files holding a model's weights (their sha256 identifies the weights).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
#: Files fetched from the hub for a model id (config, weights, processor and tokenizer).
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
RANDOM_SEED = 0
INSTALL_HINT = 'pip install -e ".[foundation]"'


@dataclass
class HFWeights:
    """Where a model's weights came from and what they are."""

    source: str
    sha256: str  # over the weight files (name and sha256 of each), "random" for random weights
    revision: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # weight file -> sha256
    folder: str | None = None
    config: str | None = None  # for random weights: where the config came from

    @property
    def is_random(self) -> bool:
        return self.sha256 == "random"

    def identity(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "revision": self.revision}

    def meta(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "files": self.files,
            "folder": self.folder,
            "config": self.config,
        }

    def line(self, network: str) -> str:
        if self.is_random:
            return f"{network} RANDOM weights ({self.config}); not {self.source}"
        rev = f" revision {self.revision[:12]}" if self.revision else ""
        return f"{network} {self.source}{rev} sha256 {self.sha256[:12]}"


#: The text tower of the small random models of smoke runs (CLIP's and CLAP's alike).
SMALL_TEXT_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise BackboneError(f"CLIP / CLAP need transformers ({exc}): {INSTALL_HINT}") from exc
    return transformers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weight_files(folder: Path) -> dict[str, str]:
    """Weight file name -> sha256, for every weight file of a ``save_pretrained`` folder."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return {p.name: _sha256(p.resolve()) for p in files}


def combined_sha256(files: dict[str, str]) -> str:
    """One sha256 for a set of weight files (their names and sha256s, sorted)."""
    return hashlib.sha256(
        "".join(f"{name} {sha}\n" for name, sha in sorted(files.items())).encode()
    ).hexdigest()


def _revision(folder: Path) -> str | None:
    """The hub commit of a cache snapshot folder (``.../snapshots/<commit>``), else None."""
    return folder.name if folder.parent.name == "snapshots" else None


def locate(name: str, allow_download: bool) -> Path:
    """A local folder with the model ``name``: ``name`` itself when it is a folder, else the Hugging
    Face cache's snapshot of that model id (fetched once when ``allow_download`` and online)."""
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a hub id is NAME or OWNER/NAME
        raise BackboneError(f"{name}: no such folder (a save_pretrained folder or a model id)")
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id=name, allow_patterns=HUB_PATTERNS, local_files_only=not allow_download
            )
        )
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, no cache: one clear line
        how = "" if allow_download else " (downloads are off: --no-download)"
        raise BackboneError(
            f"no weights for {name}{how}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}; "
            "pass a save_pretrained folder, run once online to fill the Hugging Face cache, or "
            "--allow-random-weights for a smoke run"
        ) from exc


def load_model(
    name: str,
    model_class: Callable[..., Any],
    allow_download: bool,
    allow_random: bool,
    default_config: Callable[[], Any],
) -> tuple[Any, HFWeights, Path | None]:
    """``(model in eval mode, its weights, its folder or None)``: ``model_class.from_pretrained``
    of :func:`locate`'s folder; random weights (seeded) only when ``allow_random``."""
    import torch

    require_transformers()
    try:
        folder = locate(name, allow_download)
        files = weight_files(folder)
        if not files:
            raise BackboneError(f"{folder}: no weight files ({', '.join(WEIGHT_SUFFIXES)})")
        model = model_class.from_pretrained(str(folder)).eval()
        weights = HFWeights(
            name, combined_sha256(files), _revision(folder), files, str(folder.absolute())
        )
        return model, weights, folder
    except BackboneError:
        if not allow_random:
            raise
    except (OSError, ValueError) as exc:
        if not allow_random:
            raise BackboneError(f"{name}: cannot load the model: {exc}") from exc
    config, where, folder = _random_config(name, model_class, default_config)
    torch.manual_seed(RANDOM_SEED)
    model = model_class(config).eval()
    return model, HFWeights(name, "random", None, {}, None, where), folder


def _random_config(
    name: str, model_class: Any, default_config: Callable[[], Any]
) -> tuple[Any, str, Path | None]:
    """The config of a random model: the folder's or the hub cache's, else the small default."""
    config_class = model_class.config_class
    candidates = [Path(name).expanduser()]
    try:
        from huggingface_hub import snapshot_download

        candidates.append(
            Path(snapshot_download(repo_id=name, allow_patterns=["*.json"], local_files_only=True))
        )
    except Exception:  # noqa: BLE001 - no cached config: the default one
        pass
    for folder in candidates:
        if (folder / "config.json").is_file():
            return config_class.from_pretrained(str(folder)), f"config of {folder}", folder
    return default_config(), "small default config, not the model's", None


def processor_config(processor: Any) -> dict[str, Any]:
    """A processor's settings as recorded in an identity (JSON-plain, sorted)."""
    settings = processor.to_dict()
    plain = json.loads(json.dumps(settings, default=str, sort_keys=True))
    return {k: v for k, v in plain.items() if k not in ("processor_class", "_processor_class")}


class HFBackbone(Backbone):
    """A backbone whose network is a ``transformers`` model (CLIP, CLAP): weights from a model id
    or a ``save_pretrained`` folder (:func:`load_model`), identity by the weight files' sha256.
    Subclasses set :attr:`model_class` and :attr:`weights_option` and give :meth:`small_config`
    and :meth:`after_load` (their processor and shapes)."""

    model_class: ClassVar[str]  # the transformers class, e.g. "CLIPModel"
    weights_option: ClassVar[str]  # the setting naming the weights, e.g. "clip_weights"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weights: Any = None

    def weights_name(self) -> str:
        return str(getattr(self.settings, self.weights_option))

    def small_config(self) -> Any:
        """The config of a random model when the model's own is not at hand (smoke runs)."""
        raise NotImplementedError

    def after_load(self, folder: Path | None) -> None:
        """Read what comes with the weights (processor, sizes) once the model is loaded."""
        raise NotImplementedError

    def probe_key(self) -> str:
        return f"{self.network}|{self.weights_name()}"

    def _build(self) -> None:
        transformers = require_transformers()
        s = self.settings
        self.model, self.weights, folder = load_model(
            self.weights_name(),
            getattr(transformers, self.model_class),
            s.allow_download,
            s.allow_random_weights,
            self.small_config,
        )
        self.after_load(folder)

    def prepare_weights(self, device: str) -> None:
        """Build and load the model and take its weights record (the first half of ``prepare``)."""
        self._build()
        self.load(device)
        self.random = self.weights.is_random
        self.record = self.weights.meta()
        self.weights_line = self.weights.line(self.network)

    def load(self, device: str) -> None:
        if self.model is None:
            self._build()
        self.device = device
        self.model = self.model.to(device).eval()
