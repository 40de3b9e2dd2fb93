"""Decode only the planned frames of a clip, scaled straight to 224x224 (bilinear, no crop).

One ffmpeg process per clip: ``select`` on the planned frame numbers, ``scale`` in the same filter
graph, raw rgb24 on a pipe, stopping after the last planned frame. It needs no extra dependency, and
one decoder for every run keeps the features independent of what is installed (another scaler's
pixels differ, up to 120/255 on sharp edges); decoding is far from the bottleneck next to VGG-19.

Frame numbers count decoded frames from 0 in decode order with no frame-rate conversion
(``-fps_mode passthrough``), which is also what :func:`count_frames` counts.

A backbone with its own image preprocessing (CLIP's resize and center crop) gets the planned frames
at their own size from the same ffmpeg process (:func:`decode_planned_native`: a second output,
PPM images on another pipe), so its processor sees what it would see from any decoder's frames.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Sequence

import numpy as np

SIZE = 224


class FrameDecodeError(RuntimeError):
    """A clip could not be decoded or has fewer frames than planned."""


def count_frames(path: str | os.PathLike, timeout: float = 120.0) -> int:
    """Number of video frames actually decoded from ``path`` (not the container's metadata)."""
    cmd = [
        "ffprobe",
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-count_frames",
        "-show_entries",
        "stream=nb_read_frames",
        "-of",
        "default=nokey=1:noprint_wrappers=1",
        str(path),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FrameDecodeError(
            f"{path}: ffprobe timed out after {timeout:.0f} s counting frames"
        ) from exc
    text = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not text or not text[0].strip().isdigit():
        err = proc.stderr.strip().splitlines()[-1:] or ["no video stream"]
        raise FrameDecodeError(f"{path}: cannot count video frames ({err[0]})")
    return int(text[0])


def _unique(frame_indices: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError("no frames planned")
    if idx.min() < 0:
        raise ValueError(f"negative frame index {idx.min()} in the plan")
    return np.unique(idx, return_inverse=True)


def _select_expr(unique: np.ndarray) -> str:
    """ffmpeg ``select`` for the sorted frame numbers ``unique``: runs become ``between`` terms, summed
    as a balanced tree (a flat chain of a hundred terms overflows ffmpeg's expression parser)."""
    runs: list[tuple[int, int]] = []
    for i in (int(x) for x in unique):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    terms = [f"eq(n,{a})" if a == b else f"between(n,{a},{b})" for a, b in runs]

    def tree(t: list[str]) -> str:
        if len(t) == 1:
            return t[0]
        mid = len(t) // 2
        return f"({tree(t[:mid])}+{tree(t[mid:])})"

    return f"select='{tree(terms)}'"


def _decode_raw(
    path: str | os.PathLike,
    unique: np.ndarray,
    graph: list[str],
    frame_bytes: int,
    threads: int,
    timeout: float,
) -> np.ndarray:
    """Run ffmpeg with the filter arguments ``graph`` to rgb24 raw video: the first
    ``len(unique)`` frames as a flat uint8 array, or a ``FrameDecodeError`` saying what failed."""
    n = len(unique)
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-threads",
        str(threads),
        "-i",
        str(path),
        *graph,
        "-fps_mode",
        "passthrough",
        "-frames:v",
        str(n),
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "pipe:1",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if proc.returncode != 0 and b"fps_mode" in proc.stderr:  # ffmpeg < 5.1: -vsync spelling
            cmd[cmd.index("-fps_mode")] = "-vsync"
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FrameDecodeError(f"{path}: ffmpeg timed out after {timeout:.0f} s") from exc
    got = len(proc.stdout) // frame_bytes
    if proc.returncode != 0 and got < n:
        err = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["unknown error"]
        raise FrameDecodeError(f"{path}: ffmpeg could not decode the clip ({err[0]})")
    if got < n:
        raise FrameDecodeError(
            f"{path}: only {got} of the {n} planned frames could be decoded (highest planned frame "
            f"number {int(unique[-1])}); the clip is shorter than the plan, re-run the segments stage"
        )
    return np.frombuffer(proc.stdout, dtype=np.uint8, count=n * frame_bytes)


def decode_unique_ffmpeg(
    path: str | os.PathLike,
    unique: np.ndarray,
    size: int = SIZE,
    threads: int = 1,
    timeout: float = 300.0,
) -> np.ndarray:
    """Frames ``unique`` (sorted, distinct) of ``path`` as uint8 (U, size, size, 3) RGB."""
    vf = f"{_select_expr(unique)},scale={size}:{size}:flags=bilinear"
    raw = _decode_raw(path, unique, ["-map", "0:v:0", "-vf", vf], size * size * 3, threads, timeout)
    return raw.reshape(len(unique), size, size, 3)


def decode_planned(
    path: str | os.PathLike,
    frame_indices: np.ndarray | Sequence[int],
    size: int = SIZE,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the distinct planned frames once: returns ``(frames (U, size, size, 3) uint8, inverse)``
    with ``frames[inverse]`` in the order of ``frame_indices.reshape(-1)`` (a plan may repeat frames)."""
    unique, inverse = _unique(frame_indices)
    return decode_unique_ffmpeg(path, unique, size, threads), inverse


def decode_unique_sizes(
    path: str | os.PathLike,
    unique: np.ndarray,
    sizes: Sequence[tuple[int, int]],
    threads: int = 1,
    timeout: float = 300.0,
) -> list[np.ndarray]:
    """Frames ``unique`` of ``path`` decoded once and scaled to each of ``sizes`` (width, height):
    one uint8 RGB array (U, height, width, 3) per size.

    One ffmpeg process: ``select`` -> ``split`` -> per size ``scale`` (bilinear, straight to rgb24,
    as :func:`decode_unique_ffmpeg`) padded to the widest -> ``vstack``; the rows are cut apart again
    here. Each size's pixels are those of a decode at that size alone.
    """
    sizes = [(int(w), int(h)) for w, h in sizes]
    if not sizes:
        raise ValueError("no frame size asked for")
    graph, width, height = _stacked_graph(unique, sizes)
    tall = _decode_raw(
        path,
        unique,
        ["-filter_complex", graph, "-map", "[out]"],
        width * height * 3,
        threads,
        timeout,
    )
    return _cut(tall, len(unique), sizes)


def _stacked_graph(
    unique: np.ndarray, sizes: list[tuple[int, int]], native: bool = False
) -> tuple[str, int, int]:
    """``(filter graph, width, height)``: ``select`` -> ``split`` -> per size ``scale`` (bilinear,
    straight to rgb24) padded to the widest -> ``vstack`` as ``[out]`` (width x height: the sizes
    stacked); with ``native``, one more branch ``[native]``: the frames as decoded, in rgb24."""
    k = len(sizes)
    width = max((w for w, _ in sizes), default=0)
    height = sum(h for _, h in sizes)
    branches = []
    for j, (w, h) in enumerate(sizes):
        pad = f",pad={width}:{h}" if w < width else ""
        branches.append(f"[s{j}]scale={w}:{h}:flags=bilinear,format=rgb24{pad}[p{j}]")
    if native:
        branches.append(f"[s{k}]format=rgb24[native]")
    outputs = k + int(native)
    split = "".join(f"[s{j}]" for j in range(outputs))
    graph = f"[0:v:0]{_select_expr(unique)},split={outputs}{split};" + ";".join(branches)
    if k > 1:
        stacked = "".join(f"[p{j}]" for j in range(k))
        graph += f";{stacked}vstack=inputs={k}[out]"
    elif k == 1:
        graph = graph.replace("[p0]", "[out]")
    return graph, width, height


def _cut(raw: np.ndarray, n: int, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """The stacked frames of :func:`_stacked_graph` (flat uint8) cut apart: one array per size."""
    width = max(w for w, _ in sizes)
    tall = raw[: n * width * sum(h for _, h in sizes) * 3].reshape(n, -1, width, 3)
    out, top = [], 0
    for w, h in sizes:
        out.append(np.ascontiguousarray(tall[:, top : top + h, :w]))
        top += h
    return out


def decode_planned_sizes(
    path: str | os.PathLike,
    frame_indices: np.ndarray | Sequence[int],
    sizes: Sequence[tuple[int, int]],
    threads: int = 1,
) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`decode_planned` at several sizes in one decoding pass: ``(frames per size, inverse)``."""
    unique, inverse = _unique(frame_indices)
    return decode_unique_sizes(path, unique, sizes, threads), inverse


def _ppm_frames(data: bytes | bytearray, n: int, path: str | os.PathLike) -> list[np.ndarray]:
    """The first ``n`` images of a stream of binary PPM (P6, maxval 255) as uint8 (H, W, 3)."""
    frames, pos = [], 0
    while len(frames) < n:
        fields, end = [], pos
        while len(fields) < 4:  # magic, width, height, maxval: separated by whitespace
            while end < len(data) and data[end : end + 1].isspace():
                end += 1
            start = end
            while end < len(data) and not data[end : end + 1].isspace():
                end += 1
            if start == end:
                break
            fields.append(data[start:end])
        if len(fields) < 4 or fields[0] != b"P6" or fields[3] != b"255":
            raise FrameDecodeError(
                f"{path}: only {len(frames)} of the {n} planned frames could be decoded at their "
                "own size; the clip is shorter than the plan, re-run the segments stage"
            )
        width, height = int(fields[1]), int(fields[2])
        start = end + 1  # one whitespace byte after maxval
        size = width * height * 3
        if start + size > len(data):
            raise FrameDecodeError(f"{path}: a frame decoded at its own size was cut short")
        frames.append(np.frombuffer(data, np.uint8, size, start).reshape(height, width, 3))
        pos = start + size
    return frames


def decode_unique_native(
    path: str | os.PathLike,
    unique: np.ndarray,
    sizes: Sequence[tuple[int, int]],
    threads: int = 1,
    timeout: float = 300.0,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames ``unique`` of ``path`` decoded once: scaled to each of ``sizes`` (as
    :func:`decode_unique_sizes`, bitwise) and at their own size (RGB, as decoded, a list of
    (H, W, 3) uint8): ``(per size, native)``. One ffmpeg process with two outputs: the scaled
    frames as raw video on stdout, the native ones as PPM images on a second pipe."""
    sizes = [(int(w), int(h)) for w, h in sizes]
    n = len(unique)
    k = len(sizes)
    graph, width, height = _stacked_graph(unique, sizes, native=True)
    for passthrough in ("-fps_mode", "-vsync"):  # ffmpeg < 5.1 spells it -vsync
        each = [passthrough, "passthrough", "-frames:v", str(n)]
        head = ["ffmpeg", "-nostdin", "-v", "error", "-threads", str(threads), "-i", str(path)]
        scaled = ["-map", "[out]", *each, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        raw, err, code, data = _two_outputs(
            [*head, "-filter_complex", graph, *(scaled if k else [])],
            ["-map", "[native]", *each, "-f", "image2pipe", "-c:v", "ppm"],
            path,
            timeout,
        )
        if not (code != 0 and b"fps_mode" in err):
            break
    if code != 0 and not data:
        lines = err.decode(errors="replace").strip().splitlines()[-1:] or ["unknown error"]
        raise FrameDecodeError(f"{path}: ffmpeg could not decode the clip ({lines[0]})")
    native = _ppm_frames(data, n, path)
    out = []
    if k:
        frame_bytes = width * height * 3
        if len(raw) // frame_bytes < n:
            raise FrameDecodeError(
                f"{path}: only {len(raw) // frame_bytes} of the {n} planned frames could be "
                "decoded; the clip is shorter than the plan, re-run the segments stage"
            )
        out = _cut(np.frombuffer(raw, np.uint8), n, sizes)
    return out, native


def _two_outputs(
    cmd: list[str], native: list[str], path: str | os.PathLike, timeout: float
) -> tuple[bytes, bytes, int, bytearray]:
    """Run ffmpeg ``cmd`` with one more output, ``native`` + a pipe of its own, read alongside
    stdout: ``(stdout, stderr, return code, the second pipe's bytes)`` (writable: the frames'
    arrays are views of them)."""
    read_native, write_native = os.pipe()
    received: list[bytearray] = []

    def drain() -> None:
        buffer = bytearray()
        with os.fdopen(read_native, "rb") as f:
            while chunk := f.read(1 << 20):
                buffer += chunk
        received.append(buffer)

    try:
        proc = subprocess.Popen(
            [*cmd, *native, f"pipe:{write_native}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            pass_fds=(write_native,),
        )
    except OSError:
        os.close(read_native)
        raise
    finally:
        os.close(write_native)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        raw, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise FrameDecodeError(f"{path}: ffmpeg timed out after {timeout:.0f} s") from exc
    finally:
        reader.join(timeout=timeout)
    return raw, err, proc.returncode, received[0] if received else bytearray()


def decode_planned_native(
    path: str | os.PathLike,
    frame_indices: np.ndarray | Sequence[int],
    sizes: Sequence[tuple[int, int]],
    threads: int = 1,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """:func:`decode_planned_sizes` plus the frames at their own size, one decoding pass:
    ``(frames per size, native frames, inverse)``."""
    unique, inverse = _unique(frame_indices)
    scaled, native = decode_unique_native(path, unique, sizes, threads)
    return scaled, native, inverse
