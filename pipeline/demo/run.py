"""``avel demo``: generate a small event set, serve it on loopback, run every stage of the real CLI.

The stages run as subprocesses of the same CLI users run (``python -m pipeline.cli <stage> ...``).
The pipeline is a list of :class:`Step` specs; a step whose subcommand this build does not register
is reported as "not available in this build" (and the steps needing it as blocked), the rest run.
A finished step leaves a stamp in ``RUN_DIR/.demo/``; re-running skips it while its command line
and outputs are unchanged. The run ends with one table: per-step time and status, accuracy per
model, A2V/V2A, the settings used (frames per segment, weights real or RANDOM) and the pictures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.io import write_json
from pipeline.core.layout import DataLayout

if TYPE_CHECKING:  # the weights module imports torch: only when the demo runs
    from pipeline.demo.weights import WeightSource

REPO = Path(__file__).resolve().parents[2]
SUPERVISED_MODELS = ("a", "v", "av_att", "dmrn")
OK, DONE, MISSING, BLOCKED, FAILED = (
    "ok",
    "done earlier",
    "not available in this build",
    "blocked",
    "failed",
)
ACCURACY_KEYS = (
    "test_accuracy",
    "test_acc",
    "test_segment_accuracy",
    "segment_accuracy",
    "accuracy",
    "acc",
)


@dataclass
class DemoConfig:
    data_dir: Path = Path("data/demo")
    run_dir: Path = Path("runs/demo")
    clips: int = 30
    seed: int = 0
    frames_per_segment: int = 1
    epochs: int = 20
    force: bool = False
    offline: bool = False  # never try to fetch the pretrained weights
    weight_sources: dict[str, WeightSource] | None = None  # default: the official files
    python: str = sys.executable
    echo: bool = True  # stream each stage's output to stdout

    @property
    def synth_dir(self) -> Path:
        return DataLayout(self.data_dir).demo_source

    @property
    def stamp_dir(self) -> Path:
        return Path(self.run_dir) / ".demo"


@dataclass
class Step:
    """One stage call: ``avel <command...> <args...>``; ``{base_url}`` in args is filled at run time."""

    name: str
    command: tuple[str, ...]
    args: list[str]
    outputs: list[Path] = field(default_factory=list)  # must exist for the step to count as done
    needs: tuple[str, ...] = ()
    run_dir: Path | None = None  # a training run whose metrics the summary reads
    rebuild_args: tuple[str, ...] = ()  # added when a step it needs ran again (stale outputs)


@dataclass
class StepResult:
    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""


# --------------------------------------------------------------------------- weights


def feature_stores_random(data_dir: Path) -> bool | None:
    """True if any feature store says its network had random weights; None when there is none."""
    metas = sorted(DataLayout(data_dir).features.glob("*/meta.json"))
    if not metas:
        return None
    flags = []
    for meta_path in metas:
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        weights = meta.get("weights") or {}
        flags.append(
            bool(meta.get("random_weights"))
            or (isinstance(weights, dict) and weights.get("sha256") == "random")
        )
    return any(flags) if flags else None


# --------------------------------------------------------------------------- the step list


def demo_steps(cfg: DemoConfig, cached: dict[str, Path | None]) -> list[Step]:
    """The pipeline the demo runs, in order (flags as each stage's CLI defines them). Localization
    runs are evaluated on test by ``train`` itself (best-on-val checkpoint); the cross-modal run has
    its own ``evaluate-crossmodal``."""
    d, r, g = str(cfg.data_dir), Path(cfg.run_dir), cfg.synth_dir
    common = ["--data-dir", d]
    weights = ["--no-download"]  # the demo fetched what it could; the stage never downloads
    if cached.get("vggish") is not None:
        weights += ["--vggish-checkpoint", str(cached["vggish"])]
    if cached.get("vgg19") is not None:
        weights += ["--vgg19-weights", str(cached["vgg19"])]
    if not all(cached.values()):
        weights.append("--allow-random-weights")
    steps = [
        Step(
            "annotations",
            ("annotations",),
            [
                *common,
                "--ave-annotations",
                str(g / "Annotations.txt"),
                "--ave-splits",
                str(g),
                "--audioset-csv",
                str(g / "segments.csv"),
            ],
            outputs=[DataLayout(d).manifest],
            needs=("generate",),
        ),
        Step(
            "download",
            ("download",),
            [
                *common,
                "--url-template",
                "{base_url}/{youtube_id}.mp4",
                "--sleep",
                "0",
                "--workers",
                "2",
            ],
            needs=("annotations",),
        ),
        Step(
            "segments",
            ("segments",),
            [*common, "--frames-per-segment", str(cfg.frames_per_segment)],
            needs=("download",),
        ),
        Step(
            "features",
            ("features",),
            [*common, "--features", "audio,visual", *weights],
            needs=("segments",),
            rebuild_args=("--force",),
        ),
    ]
    train = [*common, "--epochs", str(cfg.epochs), "--seeds", str(cfg.seed)]
    small_batches = ["--batch-size", "8"]  # ~20 training clips: several steps per epoch
    for mode, model in [*(("supervised", m) for m in SUPERVISED_MODELS), ("weak", "av_att")]:
        name = f"{mode}_{model}"
        steps.append(
            Step(
                f"train {mode} {model}",
                ("train", mode),
                [*train, *small_batches, "--model", model, "--run-dir", str(r), "--name", name],
                needs=("features",),
                run_dir=r / name,
                rebuild_args=("--force",),
            )
        )
    cross = r / "crossmodal_avdln"
    steps += [
        Step(
            "train-crossmodal avdln",
            ("train", "crossmodal"),
            [*train, "--model", "avdln", "--run-dir", str(r), "--name", cross.name],
            needs=("features",),
            run_dir=cross,
        ),
        Step(
            "evaluate-crossmodal avdln",
            ("evaluate",),
            [*common, "--run", str(cross)],
            needs=("train-crossmodal avdln",),
        ),
    ]
    return steps


# --------------------------------------------------------------------------- running


def available_commands(parser: argparse.ArgumentParser | None = None) -> set[tuple[str, ...]]:
    """Every (sub)command path the CLI registers, e.g. ("annotations",), ("train", "weak"); a
    positional argument with choices counts as a level of subcommands."""
    from pipeline.cli import build_parser

    found: set[tuple[str, ...]] = set()

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.add((*prefix, name))
                    walk(sub, (*prefix, name))
            elif prefix and not action.option_strings and action.choices:
                found.update((*prefix, str(c)) for c in action.choices)  # `train {supervised,weak}`

    walk(parser or build_parser(), ())
    return found


def _stamp_path(cfg: DemoConfig, step: Step) -> Path:
    return cfg.stamp_dir / (step.name.replace(" ", "_") + ".json")


def _finished_at(cfg: DemoConfig, name: str) -> float:
    try:
        stamp = json.loads((cfg.stamp_dir / (name.replace(" ", "_") + ".json")).read_text())
    except (OSError, ValueError):
        return 0.0
    return float(stamp.get("finished_at", 0.0))


def _stale_since_last_attempt(cfg: DemoConfig, step: Step) -> bool:
    """A step needed by this one finished after this one's last attempt (e.g. a run that failed or
    was killed after its inputs changed): its partial outputs are stale."""
    attempt = cfg.stamp_dir / (step.name.replace(" ", "_") + ".attempt")
    try:
        last = float(attempt.read_text())
    except (OSError, ValueError):
        return False
    return any(_finished_at(cfg, n) > last for n in step.needs)


def _settings_changed(cfg: DemoConfig, step: Step) -> bool:
    """The step finished earlier with another command line (e.g. other weights): rebuild."""
    try:
        stamp = json.loads(_stamp_path(cfg, step).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("argv") != [*step.command, *step.args]


def is_done(cfg: DemoConfig, step: Step) -> bool:
    """Finished earlier with the same command line, and its outputs are still there."""
    try:
        stamp = json.loads(_stamp_path(cfg, step).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("argv") == [*step.command, *step.args] and all(
        p.exists() for p in step.outputs
    )


def run_cli(cfg: DemoConfig, argv: list[str], log_path: Path) -> tuple[int, str]:
    """Run ``python -m pipeline.cli argv``; pass its output through (progress bars intact) and into
    ``log_path``; return (exit code, the last lines of output)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail = b""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [cfg.python, "-m", "pipeline.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(1 << 16):
            log.write(chunk)
            tail = (tail + chunk)[-4000:]
            if cfg.echo:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        rc = proc.wait()
    lines = tail.decode("utf-8", "replace").replace("\r", "\n").splitlines()
    return rc, "\n".join(line for line in lines[-15:] if line.strip())


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_steps(
    cfg: DemoConfig, steps: list[Step], base_url: str, status: dict[str, str] | None = None
) -> list[StepResult]:
    """Run the steps in order. ``status`` holds what ran before them (e.g. {"generate": OK}); a step
    is skipped only when it finished earlier AND none of the steps it needs ran again now."""
    have = available_commands()
    status = dict(status or {})
    results = []
    for step in steps:
        label = " ".join(step.command)
        unmet = [n for n in step.needs if status.get(n) not in (OK, DONE)]
        upstream_ran = any(status.get(n) == OK for n in step.needs)
        if step.command not in have:
            res = StepResult(step.name, MISSING, detail=f"`avel {label}` is not registered")
        elif unmet:
            res = StepResult(step.name, BLOCKED, detail=f"needs {', '.join(unmet)}")
        elif not cfg.force and not upstream_ran and is_done(cfg, step):
            took = json.loads(_stamp_path(cfg, step).read_text()).get("seconds")
            res = StepResult(step.name, DONE, detail=f"took {took:.1f}s then" if took else "")
        else:
            argv = [*step.command, *(a.replace("{base_url}", base_url) for a in step.args)]
            if (
                upstream_ran
                or cfg.force
                or _stale_since_last_attempt(cfg, step)
                or _settings_changed(cfg, step)
            ):
                argv += step.rebuild_args
            attempt = cfg.stamp_dir / (step.name.replace(" ", "_") + ".attempt")
            attempt.parent.mkdir(parents=True, exist_ok=True)
            attempt.write_text(f"{time.time()}")
            print(f"\n==> avel {' '.join(argv)}", flush=True)
            log = cfg.stamp_dir / "logs" / (step.name.replace(" ", "_") + ".log")
            (rc, tail), seconds = _timed(lambda argv=argv, log=log: run_cli(cfg, argv, log))
            missing = [str(p) for p in step.outputs if not p.exists()]
            if rc == 0 and not missing:
                write_json(
                    {
                        "argv": [*step.command, *step.args],
                        "seconds": seconds,
                        "finished_at": time.time(),
                    },
                    _stamp_path(cfg, step),
                )
                res = StepResult(step.name, OK, seconds)
            else:
                why = f"exit {rc}" if rc else f"outputs missing: {', '.join(missing)}"
                res = StepResult(step.name, FAILED, seconds, f"{why}; log {log}\n{tail}")
        status[step.name] = res.status
        results.append(res)
    return results


# --------------------------------------------------------------------------- reading results


def _leaves(obj: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], float]]:
    """Numeric leaves of a JSON object as (lower-cased key path, value); ``{mean, std}`` dicts
    count as their mean."""
    if isinstance(obj, dict):
        if "mean" in obj and not isinstance(obj["mean"], dict):
            return _leaves(obj["mean"], path)
        return [leaf for k, v in obj.items() for leaf in _leaves(v, (*path, str(k).lower()))]
    if isinstance(obj, bool) or not isinstance(obj, int | float) or obj != obj:  # NaN
        return []
    return [(path, float(obj))]


def _pick(
    leaves: list[tuple[tuple[str, ...], float]], match: Callable[[str], bool]
) -> float | None:
    """The first leaf whose last key matches, never a train/val figure, test figures first."""
    hits = [
        (path, v)
        for path, v in leaves
        if path and match(path[-1]) and not any(k.startswith(("val", "train")) for k in path)
    ]
    hits.sort(key=lambda h: not any("test" in k for k in h[0]))
    return hits[0][1] if hits else None


def read_metrics(run_dir: Path) -> dict[str, float]:
    """Test accuracy and A2V/V2A of a run, read defensively from its JSON files (the run dir's own
    first, then those of its seed folders), whatever the exact key names."""
    run_dir = Path(run_dir)
    names = ("summary.json", "metrics.json", "evaluation.json", "eval.json", "results.json")
    files = [run_dir / n for n in names] + sorted(
        p for n in names for p in run_dir.rglob(n) if p.parent != run_dir
    )
    leaves: list[tuple[tuple[str, ...], float]] = []
    for path in files:
        try:
            leaves += _leaves(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    found = {}
    accuracy = _pick(leaves, lambda k: k in ACCURACY_KEYS)
    if accuracy is not None:
        found["accuracy"] = accuracy
    for name in ("a2v", "v2a"):
        value = _pick(leaves, lambda k, n=name: k == n or (n in k and "acc" in k))
        if value is not None:
            found[name] = value
    return found


def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if value <= 1.0 else f"{value:.1f}%"


def format_table(summary: dict) -> str:
    width = max(len(s["name"]) for s in summary["steps"]) + 2
    lines = ["", "=" * 78, "avel demo summary", "=" * 78, f"{'step':<{width}}{'time':>9}  status"]
    for s in summary["steps"]:
        took = f"{s['seconds']:.1f}s" if s["seconds"] else "-"
        detail = f" ({s['detail'].splitlines()[0]})" if s["detail"] else ""
        lines.append(f"{s['name']:<{width}}{took:>9}  {s['status']}{detail}")
    lines.append(f"{'total':<{width}}{summary['total_seconds']:>8.1f}s")
    if summary["models"]:
        random = summary["settings"]["weights"].startswith("RANDOM")
        lines += [
            "",
            f"{'model run':<28}{'test acc':>10}{'A2V':>9}{'V2A':>9}"
            + ("   features from RANDOM weights" if random else ""),
        ]
        for run, m in summary["models"].items():
            lines.append(
                f"{run:<28}{_pct(m.get('accuracy')):>10}{_pct(m.get('a2v')):>9}{_pct(m.get('v2a')):>9}"
            )
    s = summary["settings"]
    lines += [
        "",
        f"settings: {s['clips']} clips, seed {s['seed']}, {s['frames_per_segment']} frame(s) per segment "
        f"(AVE used 16), {s['epochs']} epoch(s), weights: {s['weights']}",
        f"data: {s['data_dir']}   runs: {s['run_dir']}   served at {s['base_url']} (stopped)",
    ]
    if s["weights"].startswith("RANDOM"):
        lines.append(
            "WARNING: RANDOM backbone weights (pretrained files neither cached nor fetchable): a "
            "smoke run; these accuracies say nothing about the paper's."
        )
    if summary["pictures"]:
        lines += ["", "pictures:"] + [f"  {p}" for p in summary["pictures"]]
    else:
        lines += ["", "pictures: none drawn by the stages in this build"]
    for f in summary["steps"]:
        if f["status"] == FAILED:
            lines += ["", f"FAILED {f['name']}: {f['detail']}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the demo


def run_demo(cfg: DemoConfig) -> dict:
    """Generate, serve and run the whole pipeline; return (and write) the summary."""
    from pipeline.demo.server import serve_folder
    from pipeline.demo.synth import generate_demo_set, is_complete
    from pipeline.demo.weights import OFFICIAL, cached_weights, fetch_weights

    cfg.data_dir, cfg.run_dir = Path(cfg.data_dir), Path(cfg.run_dir)
    t_start = time.perf_counter()
    done_before = not cfg.force and is_complete(cfg.synth_dir, cfg.clips, cfg.seed)
    print(f"==> generating {cfg.clips} clips in {cfg.synth_dir} (seed {cfg.seed})", flush=True)
    paths, seconds = _timed(
        lambda: generate_demo_set(cfg.synth_dir, n_clips=cfg.clips, seed=cfg.seed, force=cfg.force)
    )
    results = [StepResult("generate", DONE if done_before else OK, seconds)]
    before = {"generate": results[0].status}

    if cfg.offline:
        cached = cached_weights(cfg.data_dir)
        problems = {k: "offline (--offline)" for k, v in cached.items() if v is None}
    else:
        cached, problems = fetch_weights(cfg.data_dir, cfg.weight_sources)
    for backbone, why in problems.items():
        src = (cfg.weight_sources or {}).get(backbone) or OFFICIAL[backbone]
        folder = DataLayout(cfg.data_dir).weights(backbone)
        print(
            f"WARNING: no pretrained {backbone} weights ({why}): RANDOM {backbone}. To use the "
            f"real ones, put {src.file_name} from {src.url} into {folder} and run without --offline",
            flush=True,
        )
    random_weights = not all(cached.values())
    steps = demo_steps(cfg, cached)
    with serve_folder(paths["videos"]) as base_url:  # type: ignore[index]
        print(f"==> serving {paths['videos']} at {base_url}", flush=True)  # type: ignore[index]
        results.append(StepResult("serve", OK, 0.0, base_url))
        results += run_steps(cfg, steps, base_url, before)

    store_random = feature_stores_random(cfg.data_dir)
    if store_random is True or (store_random is None and random_weights):
        missing = "; ".join(f"{k}: {why}" for k, why in problems.items()) or "see the stores"
        weights = f"RANDOM (no pretrained {missing})"
    else:
        weights = "real (pretrained: " + ", ".join(f"{k} {v}" for k, v in cached.items()) + ")"
    models = {}
    for step in steps:
        if step.run_dir is not None and step.run_dir.is_dir():
            models[step.run_dir.name] = read_metrics(step.run_dir)
    summary = {
        "steps": [r.__dict__ for r in results],
        "total_seconds": time.perf_counter() - t_start,
        "models": models,
        "pictures": sorted(str(p) for p in cfg.run_dir.rglob("*.png"))
        if cfg.run_dir.is_dir()
        else [],
        "settings": {
            "clips": cfg.clips,
            "seed": cfg.seed,
            "frames_per_segment": cfg.frames_per_segment,
            "epochs": cfg.epochs,
            "weights": weights,
            "weight_files": {k: str(v) if v else None for k, v in cached.items()},
            "data_dir": str(cfg.data_dir),
            "run_dir": str(cfg.run_dir),
            "base_url": base_url,
        },
    }
    summary["failed"] = [r.name for r in results if r.status == FAILED]
    summary["not_available"] = [r.name for r in results if r.status == MISSING]
    write_json(summary, cfg.run_dir / "demo_summary.json")
    return summary
