"""Load the AVE release's trained AVDLN (``cmm_model_weights.h5``, Keras 2.1.4) into :class:`AVDLN`.

The Keras model has ``dense_1`` 512->128 and ``dense_2`` 128->64 (visual branch, ``input_1``) and
``dense_3`` 128->128 and ``dense_4`` 128->64 (audio branch, ``input_2``), LeakyReLU(0.3) between, and
a ``Lambda`` Euclidean distance. Keras kernels are stored (in, out); torch ``Linear`` weights are
(out, in), so each kernel is transposed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.networks.avdln import AVDLN

#: Keras layer name -> (our parameter prefix, kernel shape (in, out)).
KERAS_AVDLN_LAYERS = {
    "dense_1": ("visual.0", (512, 128)),
    "dense_2": ("visual.2", (128, 64)),
    "dense_3": ("audio.0", (128, 128)),
    "dense_4": ("audio.2", (128, 64)),
}


class ReleaseWeightsError(ValueError):
    """The weights file is missing, unreadable, or lacks / misshapes a tensor."""


def read_keras_weights(h5_path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Per Keras layer, its weights by short name (``kernel``, ``bias``), from a Keras 2 h5 file.

    Reads both ``model.save_weights`` files (layers at the root) and ``model.save`` files (layers
    under ``model_weights``), using each layer's ``weight_names`` attribute.
    """
    import h5py

    path = Path(h5_path)
    if not path.is_file():
        raise ReleaseWeightsError(
            f"{path}: not found; the AVE release's trained AVDLN is `cmm_model_weights.h5` "
            "(see docs/training.md: released trained models)"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ReleaseWeightsError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        out: dict[str, dict[str, np.ndarray]] = {}
        for layer in root:
            group = root[layer]
            names = [
                n.decode() if isinstance(n, bytes) else str(n)
                for n in group.attrs.get("weight_names", [])
            ]
            weights = {}
            for name in names:
                short = name.split("/")[-1].split(":")[0]
                weights[short] = np.asarray(group[name][...])
            out[layer] = weights
    return out


def load_keras_avdln(h5_path: str | Path) -> AVDLN:
    """Build :class:`AVDLN` with the weights of a Keras AVDLN h5 file (e.g. ``cmm_model_weights.h5``)."""
    layers = read_keras_weights(h5_path)
    state: dict[str, torch.Tensor] = {}
    for layer, (prefix, kernel_shape) in KERAS_AVDLN_LAYERS.items():
        if layer not in layers:
            raise ReleaseWeightsError(
                f"{h5_path}: layer {layer!r} missing (layers found: {sorted(layers)}); "
                "is this the AVE release's cmm_model_weights.h5?"
            )
        for short, shape in (("kernel", kernel_shape), ("bias", kernel_shape[1:])):
            if short not in layers[layer]:
                raise ReleaseWeightsError(f"{h5_path}: layer {layer!r} has no {short} tensor")
            array = layers[layer][short]
            if array.shape != shape:
                raise ReleaseWeightsError(
                    f"{h5_path}: {layer}/{short} has shape {array.shape}, expected {shape} "
                    "(Keras kernels are (in, out))"
                )
        state[f"{prefix}.weight"] = torch.from_numpy(
            layers[layer]["kernel"].T.astype(np.float32).copy()
        )
        state[f"{prefix}.bias"] = torch.from_numpy(layers[layer]["bias"].astype(np.float32).copy())
    model = AVDLN()
    model.load_state_dict(state, strict=True)
    return model.eval()
