"""The VGGish network in PyTorch, layer by layer as the AudioSet TF-slim graph, and the PCA
postprocessor (AVE reference 2.2)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.backbones.vggish_frontend import NUM_BANDS, NUM_FRAMES

EMBEDDING_SIZE = 128
POOL5_SHAPE = (6, 4, 512)  # NHWC, the supplementary material's A' map
OUTPUTS = ("ave", "raw", "pca")
NUM_PARAMETERS = 72_141_184

#: torch module name -> (TF-slim scope, conv or fc). Order is the network's order.
LAYERS: dict[str, tuple[str, str]] = {
    "conv1": ("vggish/conv1", "conv"),
    "conv2": ("vggish/conv2", "conv"),
    "conv3_1": ("vggish/conv3/conv3_1", "conv"),
    "conv3_2": ("vggish/conv3/conv3_2", "conv"),
    "conv4_1": ("vggish/conv4/conv4_1", "conv"),
    "conv4_2": ("vggish/conv4/conv4_2", "conv"),
    "fc1_1": ("vggish/fc1/fc1_1", "fc"),
    "fc1_2": ("vggish/fc1/fc1_2", "fc"),
    "fc2": ("vggish/fc2", "fc"),
}


class Postprocessor(nn.Module):
    """AudioSet PCA postprocessor: uint8(trunc((clip(E (x - mu), -2, 2) + 2) * 255 / 4)).

    Reads ``vggish_pca_params.npz`` (keys ``pca_eigen_vectors`` (128, 128), ``pca_means``).
    Computed in float64 so the quantisation matches the NumPy reference.
    """

    def __init__(self, pca_params: str | os.PathLike):
        super().__init__()
        with np.load(pca_params) as params:
            missing = {"pca_eigen_vectors", "pca_means"} - set(params.files)
            if missing:
                raise KeyError(
                    f"{pca_params}: missing keys {sorted(missing)} (not VGGish PCA params)"
                )
            eigen = np.asarray(params["pca_eigen_vectors"], dtype=np.float64)
            means = np.asarray(params["pca_means"], dtype=np.float64).reshape(-1)
        if eigen.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE) or means.shape != (EMBEDDING_SIZE,):
            raise ValueError(
                f"{pca_params}: expected eigen vectors (128, 128) and 128 means, "
                f"got {eigen.shape} and {means.shape}"
            )
        self.register_buffer("eigen_vectors", torch.from_numpy(eigen))
        self.register_buffer("means", torch.from_numpy(means))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, 128) raw embeddings -> (N, 128) uint8."""
        x = embeddings.to(torch.float64)
        pca = (x - self.means) @ self.eigen_vectors.T
        clipped = pca.clamp(-2.0, 2.0)
        return ((clipped + 2.0) * (255.0 / 4.0)).to(torch.uint8)


class VGGish(nn.Module):
    """VGGish: input (N, 96, 64) or (N, 1, 96, 64) log-mel patches -> 128-d embeddings."""

    def __init__(self, postprocessor: Postprocessor | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 3, padding=1)
        self.conv2 = nn.Conv2d(64, 128, 3, padding=1)
        self.conv3_1 = nn.Conv2d(128, 256, 3, padding=1)
        self.conv3_2 = nn.Conv2d(256, 256, 3, padding=1)
        self.conv4_1 = nn.Conv2d(256, 512, 3, padding=1)
        self.conv4_2 = nn.Conv2d(512, 512, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1_1 = nn.Linear(int(np.prod(POOL5_SHAPE)), 4096)
        self.fc1_2 = nn.Linear(4096, 4096)
        self.fc2 = nn.Linear(4096, EMBEDDING_SIZE)
        self.postprocessor = postprocessor
        #: Where the weights came from; set by the loaders (None: untouched random init).
        self.weights_info = None

    def pool5(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 6, 4, 512) NHWC pool5 map (the A' features of the supplementary material)."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if tuple(x.shape[1:]) != (1, NUM_FRAMES, NUM_BANDS):
            raise ValueError(f"VGGish expects (N, 96, 64) or (N, 1, 96, 64), got {tuple(x.shape)}")
        # Channels-last activations from conv1 on (its input has one channel, so oneDNN would keep
        # NCHW): the CPU pooling and the later convolutions run 1.6x faster on them; ReLU in place.
        relu = torch.relu_
        x = relu(self.conv1(x)).contiguous(memory_format=torch.channels_last)
        x = self.pool(x)
        x = self.pool(relu(self.conv2(x)))
        x = self.pool(relu(self.conv3_2(relu(self.conv3_1(x)))))
        x = self.pool(relu(self.conv4_2(relu(self.conv4_1(x)))))
        return x.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor, output: str = "ave") -> torch.Tensor:
        """128-d embeddings. ``output``: "ave" = ReLU(fc2) as in the AVE release (float32),
        "raw" = fc2 as current upstream (float32), "pca" = AudioSet postprocessing (uint8)."""
        self._check_output(output)
        return self.head(self.pool5(x), output)

    def _check_output(self, output: str) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if output == "pca" and self.postprocessor is None:
            raise ValueError(
                "output='pca' needs the PCA parameters: load_vggish(path, pca_params=...) "
                "with vggish_pca_params.npz"
            )

    def head(self, pool5: torch.Tensor, output: str = "ave") -> torch.Tensor:
        """The fully connected layers on a :meth:`pool5` map: 128-d embeddings (``output`` as in
        :meth:`forward`), so that maps and embeddings come from one pass through the convolutions."""
        self._check_output(output)
        x = pool5.flatten(1)  # NHWC order, as TF-slim flattens
        x = torch.relu(self.fc1_1(x))
        x = torch.relu(self.fc1_2(x))
        x = self.fc2(x)
        if output == "ave":
            return torch.relu(x)
        if output == "pca":
            return self.postprocessor(x)
        return x


def probe_vggish_precision(
    model: VGGish, device: Any = "cpu", precision: str = "bf16", patches: int = 16, seed: int = 0
) -> dict[str, Any]:
    """:func:`pipeline.backbones.precision.probe_precision` for VGGish embeddings on ``patches``
    seeded log-mel-like patches: speeds and embedding relative error."""
    from pipeline.backbones.precision import probe_precision

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((patches, NUM_FRAMES, NUM_BANDS), generator=gen).to(device)
    return probe_precision(lambda v: model(v, output="raw"), x, torch.device(device), precision)
