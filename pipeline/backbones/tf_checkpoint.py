"""Read the variables of a TensorFlow checkpoint in a child process of its own.

TensorFlow must never share a process with torch's compiler stack (torchvision pulls in triton
through ``torch._dynamo``; with TensorFlow loaded first the process segfaults). So TensorFlow is
imported only here, in a fresh interpreter that imports nothing else of avel's:
``python -m pipeline.backbones.tf_checkpoint CKPT OUT_DIR NAME...`` writes the named variables
(float32) to ``OUT_DIR/variables.npz`` and every variable's shape to ``OUT_DIR/result.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: The repository folder holding the ``pipeline`` package (the child imports this module from it).
_ROOT = Path(__file__).resolve().parents[2]
RESULT, VARIABLES = "result.json", "variables.npz"


class TFCheckpointError(RuntimeError):
    """The checkpoint could not be read (``kind``: ``no_tensorflow``, ``unreadable``, ``crashed``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def read_variables(
    ckpt: str | os.PathLike, names: list[str], timeout: float = 900
) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
    """``(arrays, shapes)``: the variables ``names`` that the checkpoint has (float32) and the shape
    of every variable in it, read by TensorFlow in a child process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory(prefix="avel-tf-") as tmp:
        cmd = [sys.executable, "-m", __name__, str(ckpt), tmp, *names]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        result_path = Path(tmp) / RESULT
        if not result_path.is_file():
            tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["no output"]
            raise TFCheckpointError(
                "crashed", f"the TensorFlow reader exited with {proc.returncode}: {tail[0]}"
            )
        result = json.loads(result_path.read_text())
        if "error" in result:
            raise TFCheckpointError(result["error"], result["message"])
        with np.load(Path(tmp) / VARIABLES, allow_pickle=False) as arrays:
            found = {name: arrays[f"v{i}"] for i, name in enumerate(result["found"])}
    return found, {k: tuple(v) for k, v in result["shapes"].items()}


def _child(ckpt: str, out_dir: str, names: list[str]) -> None:
    out = Path(out_dir)

    def answer(result: dict) -> None:
        (out / RESULT).write_text(json.dumps(result))

    try:
        import tensorflow as tf
    except ImportError as exc:
        answer({"error": "no_tensorflow", "message": str(exc)})
        return
    try:
        reader = tf.train.load_checkpoint(ckpt)
    except Exception as exc:  # noqa: BLE001 - TF raises several types for unreadable files
        answer({"error": "unreadable", "message": f"{type(exc).__name__}: {exc}"})
        return
    shapes = {k: list(v) for k, v in reader.get_variable_to_shape_map().items()}
    found = [n for n in names if n in shapes]
    arrays = {f"v{i}": np.asarray(reader.get_tensor(n), np.float32) for i, n in enumerate(found)}
    np.savez(out / VARIABLES, **arrays)
    answer({"found": found, "shapes": shapes})


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3:])
