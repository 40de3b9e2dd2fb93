"""``avel attention-maps RUN --video ID``: audio-guided attention over a clip's frames (paper Fig. 5).

For each second the network's 49 attention weights (7x7 over the VGG-19 pool5 grid) are drawn over
the frame the features came from: the middle entry of ``frame_indices`` in ``DATA_DIR/segments.parquet``
(columns clip_id, second, frame_indices) when that table exists, else the middle frame of the second.
Frames are decoded with ffmpeg from ``DATA_DIR/clips/<id>.mp4`` (or ``--clip``). One PNG: frames on
top, attention overlays below, the predicted class per second in the titles.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from pipeline.core.io import atomic_path
from pipeline.core.layout import DataLayout
from pipeline.core.paths import safe_name
from pipeline.stages.segments import load_segments

SIZE = 224


def _ffmpeg_rgb(clip: Path, size: int, before: list[str], after: list[str]) -> np.ndarray:
    """Decode frames of ``clip`` as (N, size, size, 3) uint8 RGB (``before``/``after`` the input)."""
    cmd = [
        "ffmpeg",
        "-v",
        "error",
        *before,
        "-i",
        str(clip),
        *after,
        "-vf",
        f"scale={size}:{size}",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{clip}: ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[-300:]}"
        )
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, size, size, 3)


def clip_frames(clip: Path, clip_id: str, data_dir: Path, size: int = SIZE) -> list[np.ndarray]:
    """The 10 frames (size x size RGB) the per-second features were computed from."""
    if DataLayout(data_dir).segments_table.is_file():
        table = load_segments(data_dir)
        rows = table[table["clip_id"] == clip_id].sort_values("second")
        if len(rows):
            frames = _ffmpeg_rgb(clip, size, [], ["-fps_mode", "passthrough"])
            picks = [list(f)[len(f) // 2] for f in rows["frame_indices"]]
            return [frames[min(int(i), len(frames) - 1)] for i in picks]
    out = []
    for t in range(10):
        frame = _ffmpeg_rgb(clip, size, ["-ss", f"{t + 0.5:.3f}"], ["-frames:v", "1"])
        if not len(frame):
            raise RuntimeError(f"{clip}: no frame at {t + 0.5:.1f} s (clip shorter than 10 s?)")
        out.append(frame[0])
    return out


def run_attention_maps(
    run: str | Path,
    video: str,
    data_dir: str | Path | None = None,
    clip: str | Path | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
) -> Path:

    import torch

    from models.training.checkpoint import load_checkpoint
    from models.training.runs import read_config
    from pipeline.core.device import resolve_device
    from pipeline.core.manifest import load_classes
    from pipeline.core.store import FeatureStore

    video = safe_name(video, "--video")
    run = Path(run)
    config = read_config(run)
    if not config and data_dir is None:
        raise FileNotFoundError(f"{run / 'config.json'} not found: give a run folder (seed-K)")
    data_dir = Path(data_dir or config.get("train", config)["data_dir"])
    dev = resolve_device(device)
    model, _ = load_checkpoint(run / "best.pt", dev)
    if getattr(model, "attention", None) is None:
        raise ValueError(
            f"{run}: model {model.config['name']!r} has no audio-guided attention to draw"
        )
    stores = {n: FeatureStore.open(data_dir, n) for n in ("audio", "visual")}
    for name, store in stores.items():
        if video not in store:
            raise ValueError(f"{video}: not in the {name} feature store of {data_dir}")
    audio = torch.from_numpy(stores["audio"].gather([video])).to(dev)
    visual = torch.from_numpy(stores["visual"].gather([video])).to(dev)
    extra = ()
    if "audio_maps" in getattr(model, "stores", ()):  # co-attention also reads the VGGish maps
        maps = FeatureStore.open(data_dir, "audio_maps")
        extra = (torch.from_numpy(maps.gather([video])).to(dev),)
    model.eval()
    with torch.no_grad():
        alpha = model.attention_weights(audio, visual)[0].cpu().numpy().reshape(10, 7, 7)
        pred = model(audio, visual, *extra)[0].argmax(-1).cpu().numpy()
    names = load_classes(data_dir)
    clip = Path(clip) if clip else DataLayout(data_dir).clip(video)
    if not clip.is_file():
        raise FileNotFoundError(f"{clip}: clip not found (run `make download` or pass --clip)")
    frames = clip_frames(clip, video, data_dir)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 10, figsize=(20, 4.6))
    for t in range(10):
        top, bottom = axes[0, t], axes[1, t]
        top.imshow(frames[t])
        top.set_title(f"{t} s: {names[pred[t]][:14]}", fontsize=8)
        bottom.imshow(frames[t])
        bottom.imshow(
            alpha[t],
            cmap="jet",
            alpha=0.5,
            interpolation="bilinear",
            extent=(0, frames[t].shape[1], frames[t].shape[0], 0),
        )
        for ax in (top, bottom):
            ax.axis("off")
    fig.suptitle(f"{video}: audio-guided visual attention ({model.config['name']})")
    fig.tight_layout()
    out = Path(out) if out else run / f"attention-{video}.png"
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return out
