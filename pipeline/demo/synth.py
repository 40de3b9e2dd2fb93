"""A small synthetic audio-visual event set, deterministic from a seed, in the AVE file formats.

Each class is a visible object (colour, shape, motion) that makes its own sound (tone pattern, noise
band, rhythm). Every clip has one event span [start, end) in whole seconds (object visible AND heard);
its background seconds cycle through the hard cases: object visible but silent, sound heard but the
object off screen, and neither. Sources are 14 s long and the annotated 10 s clip sits at a recorded
offset inside them (an AudioSet-style segments CSV), so the download stage has a real range to cut.

Layout of ``out_dir``::

    videos/<youtube_id>.mp4          14 s sources (H.264 + AAC 16 kHz mono, +faststart)
    Annotations.txt                  Category&YouTubeID&good&start&end, contiguous category blocks
    {train,val,test}_order.txt       localization split (0-based rows of Annotations.txt)
    {train,val,test}_order_match.txt cross-modality split; test rows have 2-9 s events
    segments.csv                     YTID, start_seconds, end_seconds, "labels" (clip offsets)
    plan.json                        per clip and per source second: visible / audible flags
    .complete.json                   marker: generation finished with these settings
"""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.core.io import atomic_path, write_json
from pipeline.core.manifest import CLIP_SECONDS

SYNTH_VERSION = 1
SOURCE_SECONDS = 14
MAX_OFFSET = SOURCE_SECONDS - CLIP_SECONDS
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
MODES = ("visible_silent", "audible_offscreen", "neither")
MARKER = ".complete.json"


@dataclass(frozen=True)
class SynthClass:
    """One event class: what is drawn (colour, size in a 128x96 frame, motion) and what is heard."""

    name: str
    colour: str
    size: tuple[int, int]
    x: str  # overlay expressions; W,H frame size, w,h object size, t time, PH a per-clip phase
    y: str
    sound: str  # aevalsrc expression (before gating); PH as above
    audio_filter: str = ""  # extra filters after the gated source (e.g. a band-pass)


CLASSES: tuple[SynthClass, ...] = (
    SynthClass(
        "Beeper, red square",
        "0xE03030",
        (24, 24),
        "(W-w)*(0.5+0.5*sin(2*PI*(t/4+PH)))",
        "(H-h)/2",
        "0.5*sin(2*PI*880*t)*lt(mod(t+PH,0.25),0.125)",
    ),
    SynthClass(
        "Hummer, blue bar",
        "0x3060F0",
        (12, 40),
        "(W-w)/3",
        "(H-h)*(0.5+0.5*sin(2*PI*(t/3+PH)))",
        "0.3*(sin(2*PI*220*t)+sin(2*PI*330*t))",
    ),
    SynthClass(
        "Hisser, green slab",
        "0x30D050",
        (40, 14),
        "(W-w)*0.6+4*sin(2*PI*3*t)",
        "(H-h)/4",
        "0.8*(2*random(0)-1)",
        "highpass=f=2000,lowpass=f=4000",
    ),
    SynthClass(
        "Drummer, yellow box",
        "0xF0E030",
        (20, 20),
        "(W-w)*abs(2*mod(t/5+PH,1)-1)",
        "(H-h)*abs(2*mod(t/5+PH+0.5,1)-1)",
        "0.8*exp(-25*mod(t+PH,0.5))*sin(2*PI*150*t)",
    ),
    SynthClass(
        "Siren, magenta square",
        "0xE030E0",
        (28, 28),
        "(W-w)/2*(1+0.8*cos(2*PI*(t/2+PH)))",
        "(H-h)/2*(1+0.8*sin(2*PI*(t/2+PH)))",
        "0.5*sin(2*PI*700*t+300*sin(2*PI*0.5*t+PH))",
    ),
)

BACKGROUNDS = ("0x202830", "0x302020", "0x203020", "0x282828", "0x181838", "0x303018")


@dataclass
class ClipPlan:
    """One generated clip: identity, annotation and what happens in each source second."""

    youtube_id: str
    category: str
    label: int
    offset: int  # clip start inside the 14 s source, seconds
    start: int  # event span within the 10 s clip, end exclusive
    end: int
    visible: list[int]  # per source second (14)
    audible: list[int]
    modes: list[str]  # per clip second (10): "event" or one of MODES
    background: str
    phase: float


def _intervals(flags: list[int]) -> list[tuple[int, int]]:
    """Runs of 1s as [a, b) second intervals."""
    runs, begin = [], None
    for t, f in enumerate([*flags, 0]):
        if f and begin is None:
            begin = t
        elif not f and begin is not None:
            runs.append((begin, t))
            begin = None
    return runs


def gate_expr(flags: list[int]) -> str:
    """An ffmpeg expression that is 1 inside the flagged seconds ([a, b), exact at the edges)."""
    runs = _intervals(flags)
    return "+".join(f"gte(t,{a})*lt(t,{b})" for a, b in runs) if runs else "0"


def _youtube_ids(rng: np.random.Generator, n: int) -> list[str]:
    ids: list[str] = []
    while len(ids) < n:
        chars = [ID_ALPHABET[i] for i in rng.integers(0, 62, size=11)]  # letters and digits
        k = len(ids)
        if k == 0:
            chars[0] = "-"  # AudioSet IDs may start with '-': tools must get full URLs
        elif k == 1:
            chars[5] = "_"  # and contain '_': file names must never be split on it
        candidate = "".join(chars)
        if candidate not in ids:
            ids.append(candidate)
    return ids


def plan_clips(n_clips: int, seed: int) -> list[ClipPlan]:
    """Decide every clip (class, offset, event, hard-case seconds) from the seed alone."""
    rng = np.random.default_rng(seed)
    ids = _youtube_ids(rng, n_clips)
    plans = []
    for k in range(n_clips):
        label = k % len(CLASSES)
        length = CLIP_SECONDS if k % 4 == 3 else int(rng.integers(2, CLIP_SECONDS))
        start = int(rng.integers(0, CLIP_SECONDS - length + 1))
        end = start + length
        offset = int(rng.integers(0, MAX_OFFSET + 1))
        first_mode = int(rng.integers(0, len(MODES)))
        visible, audible, modes = [], [], []
        j = 0
        for t in range(SOURCE_SECONDS):
            u = t - offset
            if 0 <= u < CLIP_SECONDS and start <= u < end:
                mode = "event"
            elif 0 <= u < CLIP_SECONDS:
                mode = MODES[(first_mode + j) % len(MODES)]  # cycle: every case appears
                j += 1
            else:
                mode = MODES[int(rng.integers(0, len(MODES)))]
            visible.append(int(mode in ("event", "visible_silent")))
            audible.append(int(mode in ("event", "audible_offscreen")))
            if 0 <= u < CLIP_SECONDS:
                modes.append(mode)
        plans.append(
            ClipPlan(
                youtube_id=ids[k],
                category=CLASSES[label].name,
                label=label,
                offset=offset,
                start=start,
                end=end,
                visible=visible,
                audible=audible,
                modes=modes,
                background=BACKGROUNDS[int(rng.integers(0, len(BACKGROUNDS)))],
                phase=round(float(rng.random()), 3),
            )
        )
    return plans


def ffmpeg_command(plan: ClipPlan, out: Path, size: tuple[int, int], fps: int) -> list[str]:
    """The ffmpeg call that renders one 14 s source from its plan (lavfi only, no inputs)."""
    cls = CLASSES[plan.label]
    width, height = size
    scale = width / 128
    ow, oh = max(2, round(cls.size[0] * scale)), max(2, round(cls.size[1] * scale))
    ph = f"{plan.phase:.3f}"
    x, y, sound = (e.replace("PH", ph) for e in (cls.x, cls.y, cls.sound))
    grid = max(4, width // 8)
    graph = (
        f"color=c={plan.background}:s={width}x{height}:r={fps}:d={SOURCE_SECONDS},"
        f"drawgrid=w={grid}:h={grid}:t=1:c=white@0.2[bg];"
        f"color=c={cls.colour}:s={ow}x{oh}:r={fps}:d={SOURCE_SECONDS}[obj];"
        f"[bg][obj]overlay=x='{x}':y='{y}':enable='{gate_expr(plan.visible)}'[v];"
        f"aevalsrc='({gate_expr(plan.audible)})*{sound}':s=16000:d={SOURCE_SECONDS}"
        + (f",{cls.audio_filter}" if cls.audio_filter else "")
        + "[a]"
    )
    return [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-map",
        "[a]",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "18",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(fps),
        "-threads",
        "1",
        "-c:a",
        "aac",
        "-b:a",
        "48k",
        "-ar",
        "16000",
        "-ac",
        "1",
        "-t",
        str(SOURCE_SECONDS),
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        str(out),
    ]


def _render(plan: ClipPlan, path: Path, size: tuple[int, int], fps: int) -> None:
    with atomic_path(path, suffix=".mp4") as tmp:
        result = subprocess.run(
            ffmpeg_command(plan, tmp, size, fps), capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"ffmpeg failed rendering {path.name}: {result.stderr.strip()[-800:]}"
            )


def _split_lists(plans: list[ClipPlan], rows: list[int]) -> dict[str, list[int]]:
    """Localization and cross-modality partitions as row indices (rows[k] = row of clip k)."""
    n = len(plans)
    n_eval = max(1, round(0.2 * n))
    order = list(range(n))  # classes are round robin in k, so tail slices mix classes
    test, val = order[n - n_eval :], order[n - 2 * n_eval : n - n_eval]
    train = order[: n - 2 * n_eval]
    short = [k for k in order if plans[k].end - plans[k].start < CLIP_SECONDS]
    test_m = short[:n_eval]
    rest = [k for k in order if k not in test_m]
    val_m, train_m = rest[:n_eval], rest[n_eval:]
    lists = {"train_order": train, "val_order": val, "test_order": test}
    lists |= {"train_order_match": train_m, "val_order_match": val_m, "test_order_match": test_m}
    return {name: sorted(rows[k] for k in ks) for name, ks in lists.items()}


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _settings(n_clips: int, seed: int, size: tuple[int, int], fps: int) -> dict:
    return {
        "version": SYNTH_VERSION,
        "n_clips": n_clips,
        "seed": seed,
        "size": list(size),
        "fps": fps,
    }


def is_complete(
    out_dir: str | Path,
    n_clips: int = 30,
    seed: int = 0,
    size: tuple[int, int] = (128, 96),
    fps: int = 8,
) -> bool:
    """True when ``out_dir`` holds a finished set made with exactly these settings."""
    out = Path(out_dir)
    marker = out / MARKER
    try:
        if json.loads(marker.read_text()).get("settings") != _settings(n_clips, seed, size, fps):
            return False
        clips = json.loads((out / "plan.json").read_text())["clips"]
    except (OSError, ValueError, KeyError):
        return False
    return all((out / "videos" / f"{c['youtube_id']}.mp4").is_file() for c in clips)


def generate_demo_set(
    out_dir: str | Path,
    n_clips: int = 30,
    seed: int = 0,
    size: tuple[int, int] = (128, 96),
    fps: int = 8,
    workers: int = 2,
    force: bool = False,
) -> dict[str, Path]:
    """Generate (or confirm) the demo set in ``out_dir``; return the paths of what it holds."""
    if n_clips < 3:
        raise ValueError(
            f"n_clips must be at least 3 (train, val and test each need a clip), got {n_clips}"
        )
    if shutil.which("ffmpeg") is None:
        raise RuntimeError(
            "ffmpeg not found: run `make ffmpeg` (or sudo apt-get install -y ffmpeg)"
        )
    out = Path(out_dir)
    videos = out / "videos"
    settings = _settings(n_clips, seed, size, fps)
    names = [f"{s}_order{m}" for m in ("", "_match") for s in ("train", "val", "test")]
    paths = {
        "dir": out,
        "videos": videos,
        "annotations": out / "Annotations.txt",
        "segments_csv": out / "segments.csv",
        "plan": out / "plan.json",
    } | {name: out / f"{name}.txt" for name in names}
    marker = out / MARKER
    if not force and is_complete(out, n_clips, seed, size, fps):
        return paths
    marker.unlink(missing_ok=True)

    plans = plan_clips(n_clips, seed)
    videos.mkdir(parents=True, exist_ok=True)
    wanted = {f"{p.youtube_id}.mp4" for p in plans}
    for stale in videos.glob("*.mp4"):
        if stale.name not in wanted:
            stale.unlink()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = [pool.submit(_render, p, videos / f"{p.youtube_id}.mp4", size, fps) for p in plans]
        for job in jobs:
            job.result()

    ordered = sorted(range(n_clips), key=lambda k: (plans[k].label, k))  # contiguous class blocks
    rows = [0] * n_clips
    for row, k in enumerate(ordered):
        rows[k] = row
    _write_text(
        paths["annotations"],
        "".join(
            f"{p.category}&{p.youtube_id}&good&{p.start}&{p.end}\n"
            for p in (plans[k] for k in ordered)
        ),
    )
    for name, indices in _split_lists(plans, rows).items():
        _write_text(paths[name], "".join(f"{i}\n" for i in indices))
    header = (
        "# Segments csv created by the avel demo generator (synthetic, not AudioSet)\n"
        f"# num_ytids={n_clips}, num_segs={n_clips}, num_unique_labels={len(CLASSES)}, "
        f"num_positive_labels={n_clips}\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
    )
    _write_text(
        paths["segments_csv"],
        header
        + "".join(
            f'{p.youtube_id}, {p.offset:.3f}, {p.offset + CLIP_SECONDS:.3f}, "/t/avel_demo_{p.label}"\n'
            for p in plans
        ),
    )
    write_json(
        {
            "settings": settings,
            "classes": [asdict(c) for c in CLASSES],
            "clips": [asdict(p) | {"row": rows[k]} for k, p in enumerate(plans)],
        },
        paths["plan"],
    )
    write_json({"settings": settings}, marker)
    return paths
