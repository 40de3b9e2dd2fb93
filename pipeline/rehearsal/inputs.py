"""Inputs of the rehearsal: AVE's rows (real or AVE-like), clip offsets, the fault plan, the sources
and the loopback server that injects the faults.

- Rows: the real ``Annotations.txt`` and split lists (categories, event spans, IDs, repeated IDs), or
  an AVE-like generated list of the same shape (:func:`generated_ave`), optionally a subset
  (:func:`subset`: evenly spaced rows in file order, repeated IDs kept in pairs, splits re-indexed).
- Sources: a small pool of the demo generator's 14 s sources (:mod:`pipeline.demo.synth`), one per
  demo class, served under every ID (the category picks the class, so the audio carries a signal),
  plus two faulty variants: cut to 6 s (shorter than every clip range) and without audio.
- Faults (:func:`fault_plan`, per unique ID, seeded): ``unavailable`` (HTTP 404), ``rate_limited``
  (HTTP 429 once, in bursts of consecutive IDs, then the file), ``short`` and ``no_audio``; the rest
  ``ok``. :data:`EXPECTED` is the ledger status each must end in.
"""

from __future__ import annotations

import json
import math
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.io import atomic_path
from pipeline.core.text import read_lines, read_text
from pipeline.demo.server import LoopbackServer, Request
from pipeline.demo.synth import ID_ALPHABET, MAX_OFFSET, generate_demo_set

SPLIT_NAMES = tuple(f"{s}_order{m}" for m in ("", "_match") for s in ("train", "val", "test"))
#: AVE's shape: 4,143 rows, 4,097 videos (44 appear twice, one three times: 46 extra rows),
#: 28 categories, 3339/402/402 splits.
AVE_ROWS, AVE_EXTRA_ROWS, AVE_CATEGORIES = 4143, 46, 28
AVE_VIDEOS = AVE_ROWS - AVE_EXTRA_ROWS
AVE_SPLIT_SIZES = (3339, 402, 402)
FAULTS = ("ok", "unavailable", "rate_limited", "short", "no_audio")
#: The injected fault -> the ledger status the download stage must record.
EXPECTED = {
    "ok": "ok",
    "rate_limited": "ok",  # answered 429 once: paused, retried, downloaded
    "unavailable": "unavailable",
    "short": "unusable",  # the source ends before the clip's range: source_too_short
    "no_audio": "unusable",
}
#: Default shares of the unique IDs (AVE: 15-20% gone from YouTube).
DEFAULT_MIX = {"unavailable": 0.18, "rate_limited": 0.04, "short": 0.02, "no_audio": 0.02}
BURST = 3  # consecutive IDs rate-limited together
SHORT_SECONDS = 6
POOL_CLASSES = 5  # the demo generator's classes


@dataclass
class AVERows:
    """Annotation rows (``Category&ID&good&start&end``) and split lists (0-based row indices)."""

    lines: list[str]
    splits: dict[str, list[int]]
    source: str

    @property
    def ids(self) -> list[str]:
        return [line.split("&")[1] for line in self.lines]

    @property
    def unique_ids(self) -> list[str]:
        return list(dict.fromkeys(self.ids))

    def write(self, folder: Path) -> dict[str, Path]:
        """``Annotations.txt`` and ``<split>.txt`` files in ``folder``; returns their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"annotations": folder / "Annotations.txt"}
        _write(paths["annotations"], "".join(f"{line}\n" for line in self.lines))
        for name, rows in self.splits.items():
            paths[name] = folder / f"{name}.txt"
            _write(paths[name], "".join(f"{i}\n" for i in rows))
        return paths


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _read_split(folder: Path, name: str) -> list[int]:
    text = folder / f"{name}.txt"
    if text.is_file():
        values = read_text(text, "a split list").split()
        if not all(x.isdigit() for x in values):
            raise ValueError(f"{text}: not a split list (one row index per line)")
        return [int(x) for x in values]
    h5 = folder / f"{name}.h5"
    if h5.is_file():
        import h5py

        with h5py.File(h5, "r") as f:
            return [int(x) for x in f["order"][()]]
    raise FileNotFoundError(f"{folder}: no {name}.txt or {name}.h5 split list")


def read_ave(annotations: Path, splits_dir: Path) -> AVERows:
    """The real AVE rows and split lists (text lists, or the release's ``*_order*.h5``)."""
    lines = [ln.strip() for ln in read_lines(annotations, "an annotation file") if ln.strip()]
    if lines and lines[0].lower().startswith("category&"):
        lines = lines[1:]  # the header line of the published file
    if not lines:
        raise ValueError(f"{annotations}: no annotation line (Category&YouTubeID&...)")
    splits = {name: _read_split(Path(splits_dir), name) for name in SPLIT_NAMES}
    return AVERows(lines, splits, f"AVE {annotations}")


def generated_ave(rows: int = AVE_ROWS, seed: int = 0) -> AVERows:
    """An AVE-like list: ``rows`` rows in 28 contiguous category blocks, ~25% of IDs starting with
    ``-``, IDs with ``_``, AVE's share of repeated IDs, event spans (a third the whole 10 s), and
    localization / cross-modal splits in AVE's proportions."""
    rng = np.random.default_rng(seed)
    repeats = max(1, round(AVE_EXTRA_ROWS * rows / AVE_ROWS)) if rows >= 4 else 0
    unique = rows - repeats
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < unique:
        chars = [ID_ALPHABET[i] for i in rng.integers(0, 64, size=11)]
        if rng.random() < 0.25:
            chars[0] = "-"
        candidate = "".join(chars)
        if candidate not in seen:
            seen.add(candidate)
            ids.append(candidate)
    ids += [ids[int(k)] for k in rng.choice(unique, size=repeats, replace=False)]
    categories = np.sort(rng.integers(0, AVE_CATEGORIES, size=rows))
    categories[:AVE_CATEGORIES] = np.arange(min(rows, AVE_CATEGORIES))
    categories.sort()
    order = rng.permutation(rows)  # repeated IDs land in any block
    lines = []
    for k in range(rows):
        if rng.random() < 1 / 3:
            start, end = 0, 10
        else:
            start = int(rng.integers(0, 9))
            end = int(rng.integers(start + 1, 11))
        lines.append(f"Category {categories[k]:02d}&{ids[order[k]]}&good&{start}&{end}")
    cut = np.cumsum(np.round(np.asarray(AVE_SPLIT_SIZES) / AVE_ROWS * rows).astype(int))
    splits: dict[str, list[int]] = {}
    for suffix in ("", "_match"):
        perm = rng.permutation(rows)
        parts = (perm[: cut[0]], perm[cut[0] : cut[1]], perm[cut[1] :])
        for s, part in zip(("train", "val", "test"), parts, strict=True):
            splits[f"{s}_order{suffix}"] = sorted(int(i) for i in part)
    return AVERows(lines, splits, f"generated AVE-like list ({rows} rows, seed {seed})")


def subset(ave: AVERows, rows: int | None) -> AVERows:
    """``rows`` evenly spaced rows in file order (every row when None or too large), with both rows
    of AVE's share of repeated IDs; split lists re-indexed."""
    total = len(ave.lines)
    if not rows or rows >= total:
        return ave
    picked = set(np.linspace(0, total - 1, rows).round().astype(int).tolist())
    by_id: dict[str, list[int]] = {}
    for i, y in enumerate(ave.ids):
        by_id.setdefault(y, []).append(i)
    pairs = [v for v in by_id.values() if len(v) > 1]
    want = min(len(pairs), max(1, round(AVE_EXTRA_ROWS * rows / AVE_ROWS)))
    for k in np.linspace(0, len(pairs) - 1, want).round().astype(int) if pairs else []:
        picked.update(pairs[int(k)])
    for rows_of_id in pairs:  # a picked repeated ID keeps both rows
        if picked & set(rows_of_id):
            picked.update(rows_of_id)
    keep = sorted(picked)
    new = {old: k for k, old in enumerate(keep)}
    splits = {n: [new[i] for i in v if i in new] for n, v in ave.splits.items()}
    return AVERows(
        [ave.lines[i] for i in keep], splits, f"{ave.source}, {len(keep)} of {total} rows"
    )


def offsets(ids: list[str], seed: int = 0) -> dict[str, int]:
    """Each ID's clip offset inside its 14 s source (0..MAX_OFFSET s), seeded."""
    rng = np.random.default_rng(seed + 1)
    return {y: int(rng.integers(0, MAX_OFFSET + 1)) for y in ids}


def write_segments_csv(path: Path, offs: dict[str, int]) -> None:
    """An AudioSet-style segments CSV giving each ID its 10 s range."""
    header = "# Segments csv written by the avel rehearsal\n# YTID, start_seconds, end_seconds, positive_labels\n"
    body = "".join(f'{y}, {o:.3f}, {o + 10:.3f}, "/t/avel_rehearsal"\n' for y, o in offs.items())
    _write(path, header + body)


def fault_plan(
    ids: list[str], mix: dict[str, float] | None = None, seed: int = 0
) -> dict[str, str]:
    """ID -> fault. Rate limiting comes in bursts of :data:`BURST` consecutive IDs (download order);
    the other faults are drawn without replacement from the remaining IDs."""
    mix = DEFAULT_MIX if mix is None else mix
    rng = np.random.default_rng(seed + 2)
    n = len(ids)
    plan = dict.fromkeys(ids, "ok")
    limited = round(mix.get("rate_limited", 0) * n)
    bursts = math.ceil(limited / BURST) if limited else 0
    starts = rng.choice(max(1, n // (BURST + 1)), size=min(bursts, n // (BURST + 1)), replace=False)
    for s in starts:
        for k in range(int(s) * (BURST + 1), min(n, int(s) * (BURST + 1) + BURST)):
            plan[ids[k]] = "rate_limited"
    free = [y for y in ids if plan[y] == "ok"]
    order = rng.permutation(len(free))
    at = 0
    for fault in ("unavailable", "short", "no_audio"):
        count = round(mix.get(fault, 0) * n)
        for k in order[at : at + count]:
            plan[free[int(k)]] = fault
        at += count
    return plan


@dataclass
class Sources:
    """The served files: ``pool[c]`` for demo class ``c``, and the two faulty variants."""

    pool: list[Path]
    short: Path
    no_audio: Path
    classes: list[str] = field(default_factory=list)


def make_sources(folder: Path, seed: int = 0) -> Sources:
    """Render the pool with the demo generator (one source per class) and derive the variants."""
    paths = generate_demo_set(folder / "pool", n_clips=POOL_CLASSES, seed=seed)
    clips = json.loads(paths["plan"].read_text())["clips"]
    pool = [
        paths["videos"] / f"{c['youtube_id']}.mp4" for c in sorted(clips, key=lambda c: c["label"])
    ]
    short, no_audio = folder / "short.mp4", folder / "no_audio.mp4"
    for out, extra in ((short, ["-t", str(SHORT_SECONDS)]), (no_audio, ["-an"])):
        if not out.is_file():
            with atomic_path(out, suffix=".mp4") as tmp:
                cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(pool[0]), *extra]
                subprocess.run([*cmd, "-c", "copy", "-f", "mp4", str(tmp)], check=True)
    return Sources(pool, short, no_audio, [c["category"] for c in clips])


class FaultServer(LoopbackServer):
    """The loopback server with one route per ID; a rate-limited route answers 429 once and then
    serves its file (the route is reset as the 429 is logged)."""

    def __init__(self, root: Path, ave: AVERows, plan: dict[str, str], sources: Sources) -> None:
        super().__init__(root)
        self.plan = plan
        self._count_lock = threading.Lock()
        self.files: dict[str, Path] = {}
        self.limited_answers = 0
        category = {line.split("&")[1]: line.split("&")[0] for line in ave.lines}
        names = sorted(set(category.values()))
        for y, fault in plan.items():
            source = sources.pool[names.index(category[y]) % len(sources.pool)]
            name = f"{y}.mp4"
            self.files[name] = source
            if fault == "unavailable":
                self.route(name, status=404, body="Video unavailable")
            elif fault == "rate_limited":
                self.route(name, status=429, body="Too Many Requests")
            elif fault == "short":
                self.route(name, file=sources.short)
            elif fault == "no_audio":
                self.route(name, file=sources.no_audio)
            else:
                self.route(name, file=source)

    def log(self, request: Request) -> None:
        super().log(request)
        if request.status == 429 and self.plan.get(request.path[: -len(".mp4")]) == "rate_limited":
            with self._count_lock:
                self.limited_answers += 1
            self.route(request.path, file=self.files[request.path])
