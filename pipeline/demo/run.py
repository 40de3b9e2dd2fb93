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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.io import write_json

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
    "test_accuracy", "test_acc", "test_segment_accuracy", "segment_accuracy", "accuracy", "acc",
)  # fmt: skip


@dataclass
class DemoConfig:
    data_dir: Path = Path("data/demo")
    run_dir: Path = Path("runs/demo")
    clips: int = 30
    seed: int = 0
    frames_per_segment: int = 2
    epochs: int = 5
    force: bool = False
    python: str = sys.executable
    echo: bool = True  # stream each stage's output to stdout

    @property
    def synth_dir(self) -> Path:
        return Path(self.data_dir) / "synthetic"

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


@dataclass
class StepResult:
    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""


# --------------------------------------------------------------------------- weights


def cached_weights(data_dir: Path) -> dict[str, Path | None]:
    """Pretrained backbone files present in the local caches (None where absent)."""
    vggish = Path(data_dir) / "weights" / "vggish" / "vggish_model.pt"
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    vgg19 = [
        torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth",
        Path.home() / ".keras" / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ]
    return {
        "vggish": vggish if vggish.is_file() else None,
        "vgg19": next((p for p in vgg19 if p.is_file()), None),
    }


def feature_stores_random(data_dir: Path) -> bool | None:
    """True if any feature store says its network had random weights; None when there is none."""
    metas = sorted((Path(data_dir) / "features").glob("*/meta.json"))
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


def demo_steps(cfg: DemoConfig, random_weights: bool) -> list[Step]:
    """The pipeline the demo runs, in order (flags as each stage's CLI defines them)."""
    d, r, g = str(cfg.data_dir), Path(cfg.run_dir), cfg.synth_dir
    common = ["--data-dir", d]
    steps = [
        Step("annotations", ("annotations",),
             [*common, "--ave-annotations", str(g / "Annotations.txt"), "--ave-splits", str(g),
              "--audioset-csv", str(g / "segments.csv")],
             outputs=[Path(d) / "manifest.parquet"]),
        Step("download", ("download",),
             [*common, "--url-template", "{base_url}/{youtube_id}.mp4", "--sleep", "0", "--workers", "2"],
             needs=("annotations",)),
        Step("segments", ("segments",), [*common, "--frames-per-segment", str(cfg.frames_per_segment)],
             needs=("download",)),
        Step("features", ("features",),
             [*common, "--features", "audio,visual", *(["--allow-random-weights"] if random_weights else [])],
             needs=("segments",)),
    ]  # fmt: skip
    train = [*common, "--epochs", str(cfg.epochs), "--seed", str(cfg.seed)]
    runs: list[tuple[str, tuple[str, ...], str, Path]] = [
        (f"train supervised {m}", ("train", "supervised"), m, r / f"supervised_{m}")
        for m in SUPERVISED_MODELS
    ]
    runs.append(("train weak av_att", ("train", "weak"), "av_att", r / "weak_av_att"))
    runs.append(("train-crossmodal avdln", ("train-crossmodal",), "avdln", r / "crossmodal_avdln"))
    for name, command, model, run_dir in runs:
        steps.append(
            Step(name, command, [*train, "--model", model, "--run-dir", str(run_dir)],
                 needs=("features",), run_dir=run_dir)
        )  # fmt: skip
    for name, _, _, run_dir in runs:
        steps.append(
            Step(f"evaluate {run_dir.name}", ("evaluate",), [*common, "--run-dir", str(run_dir)],
                 needs=(name,))
        )  # fmt: skip
    return steps


# --------------------------------------------------------------------------- running


def available_commands() -> set[tuple[str, ...]]:
    """Every (sub)command path the CLI registers, e.g. ("annotations",), ("train", "weak")."""
    from pipeline.cli import build_parser

    found: set[tuple[str, ...]] = set()

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.add((*prefix, name))
                    walk(sub, (*prefix, name))

    walk(build_parser(), ())
    return found


def _stamp_path(cfg: DemoConfig, step: Step) -> Path:
    return cfg.stamp_dir / (step.name.replace(" ", "_") + ".json")


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
    """Run ``python -m pipeline.cli argv``; stream and log its output; return (rc, output tail)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=15)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [cfg.python, "-m", "pipeline.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", env=env,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip())
            if cfg.echo:
                print("    " + line, end="", flush=True)
        rc = proc.wait()
    return rc, "\n".join(tail)


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_steps(cfg: DemoConfig, steps: list[Step], base_url: str) -> list[StepResult]:
    have = available_commands()
    status: dict[str, str] = {}
    results = []
    for step in steps:
        label = " ".join(step.command)
        unmet = [n for n in step.needs if status.get(n) not in (OK, DONE)]
        if step.command not in have:
            res = StepResult(step.name, MISSING, detail=f"`avel {label}` is not registered")
        elif unmet:
            res = StepResult(step.name, BLOCKED, detail=f"needs {', '.join(unmet)}")
        elif not cfg.force and is_done(cfg, step):
            res = StepResult(step.name, DONE)
        else:
            argv = [*step.command, *(a.replace("{base_url}", base_url) for a in step.args)]
            print(f"\n==> avel {' '.join(argv)}", flush=True)
            log = cfg.stamp_dir / "logs" / (step.name.replace(" ", "_") + ".log")
            (rc, tail), seconds = _timed(lambda argv=argv, log=log: run_cli(cfg, argv, log))
            missing = [str(p) for p in step.outputs if not p.exists()]
            if rc == 0 and not missing:
                write_json(
                    {"argv": [*step.command, *step.args], "seconds": seconds},
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


def _flatten(obj: object, prefix: str = "") -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, bool):
        pass
    elif isinstance(obj, int | float):
        out.append((prefix, float(obj)))
    return out


def read_metrics(run_dir: Path) -> dict[str, float]:
    """Test accuracy and A2V/V2A from a run dir's JSON files, whatever their exact key names."""
    values: list[tuple[str, float]] = []
    for name in (
        "metrics.json",
        "evaluation.json",
        "eval.json",
        "results.json",
        "test_metrics.json",
    ):
        try:
            values += _flatten(json.loads((Path(run_dir) / name).read_text()))
        except (OSError, ValueError):
            continue
    found: dict[str, float] = {}
    leaf = [(path.lower(), path.lower().rsplit(".", 1)[-1], v) for path, v in values]
    for key in ACCURACY_KEYS:
        hits = [v for path, last, v in leaf if last == key and "val" not in path.split(".")[0]]
        hits = hits or [v for path, last, v in leaf if path.endswith(f"test.{key}")]
        if hits:
            found["accuracy"] = hits[-1]
            break
    for name in ("a2v", "v2a"):
        hits = [v for path, last, v in leaf if name in last and "val" not in last]
        if hits:
            found[name] = hits[-1]
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
        lines += ["", f"{'model run':<28}{'test acc':>10}{'A2V':>9}{'V2A':>9}"]
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
            "WARNING: RANDOM backbone weights (no pretrained files in the local cache): a smoke run; "
            "these accuracies say nothing about the paper's."
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

    cfg.data_dir, cfg.run_dir = Path(cfg.data_dir), Path(cfg.run_dir)
    t_start = time.perf_counter()
    done_before = not cfg.force and is_complete(cfg.synth_dir, cfg.clips, cfg.seed)
    print(f"==> generating {cfg.clips} clips in {cfg.synth_dir} (seed {cfg.seed})", flush=True)
    paths, seconds = _timed(
        lambda: generate_demo_set(cfg.synth_dir, n_clips=cfg.clips, seed=cfg.seed, force=cfg.force)
    )
    results = [StepResult("generate", DONE if done_before else OK, seconds)]

    cached = cached_weights(cfg.data_dir)
    random_weights = not all(cached.values())
    steps = demo_steps(cfg, random_weights)
    with serve_folder(paths["videos"]) as base_url:  # type: ignore[index]
        print(f"==> serving {paths['videos']} at {base_url}", flush=True)  # type: ignore[index]
        results.append(StepResult("serve", OK, 0.0, base_url))
        results += run_steps(cfg, steps, base_url)

    store_random = feature_stores_random(cfg.data_dir)
    if store_random is True or (store_random is None and random_weights):
        missing = ", ".join(k for k, v in cached.items() if v is None) or "none"
        weights = f"RANDOM (missing from cache: {missing})"
    else:
        weights = "real (pretrained, from the local cache)"
    models = {}
    for step in steps:
        if step.run_dir is not None and step.run_dir.is_dir():
            models[step.run_dir.name] = read_metrics(step.run_dir)
    summary = {
        "steps": [r.__dict__ for r in results],
        "total_seconds": time.perf_counter() - t_start,
        "models": models,
        "pictures": sorted(str(p) for p in cfg.run_dir.rglob("*.png")) if cfg.run_dir.is_dir() else [],
        "settings": {
            "clips": cfg.clips, "seed": cfg.seed, "frames_per_segment": cfg.frames_per_segment,
            "epochs": cfg.epochs, "weights": weights, "data_dir": str(cfg.data_dir),
            "run_dir": str(cfg.run_dir), "base_url": base_url,
        },
    }  # fmt: skip
    summary["failed"] = [r.name for r in results if r.status == FAILED]
    summary["not_available"] = [r.name for r in results if r.status == MISSING]
    write_json(summary, cfg.run_dir / "demo_summary.json")
    return summary


def register(subparsers: argparse._SubParsersAction) -> None:
    d = DemoConfig()
    p = subparsers.add_parser(
        "demo", help="generate a small event set, serve it on loopback and run every stage on it"
    )
    p.add_argument("--data-dir", type=Path, default=d.data_dir, help=f"default {d.data_dir}")
    p.add_argument("--run-dir", type=Path, default=d.run_dir, help=f"default {d.run_dir}")
    p.add_argument(
        "--clips", type=int, default=d.clips, help=f"clips to generate (default {d.clips})"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--frames-per-segment",
        type=int,
        default=d.frames_per_segment,
        help=f"frames per 1 s segment for the visual features (default {d.frames_per_segment})",
    )
    p.add_argument(
        "--epochs", type=int, default=d.epochs, help=f"training epochs (default {d.epochs})"
    )
    p.add_argument("--force", action="store_true", help="regenerate the set and rerun every step")
    p.add_argument("--quiet", action="store_true", help="do not echo each stage's output")
    p.set_defaults(func=_main)  # fmt: skip


def _main(args: argparse.Namespace) -> int:
    cfg = DemoConfig(
        data_dir=args.data_dir, run_dir=args.run_dir, clips=args.clips, seed=args.seed,
        frames_per_segment=args.frames_per_segment, epochs=args.epochs, force=args.force,
        echo=not args.quiet,
    )  # fmt: skip
    try:
        summary = run_demo(cfg)
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}")
        return 2
    print(format_table(summary))
    print(f"\n-> {cfg.run_dir / 'demo_summary.json'}")
    return 1 if summary["failed"] else 0
