"""The Makefile against the CLI: every variable feeds a real flag under its upper-snake-case name,
every flag of a command has its variable, values arrive intact, one yes/no rule, the stage chain
(`make -n`), `make help` complete, `make clean` harmless. Dry runs (`make -n`) only: the targets
themselves run in tests/test_make_targets.py."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from tests.support.make import MAKEFILE, TARGETS, USER_VARIABLES, avel_commands, make

#: Flags no Make variable feeds, and why.
UNMAPPED = {"--help": "argparse's own"}
#: Flags whose value Make computes from other variables: the variables they may come from.
COMPUTED = {
    ("import-checkpoint", "--out"): {"OUT", "RUN_DIR", "CHECKPOINT"},  # RUN_DIR/release-<file>
    ("evaluate", "--run"): {"RUN", "OUT", "RUN_DIR", "CHECKPOINT"},  # the imported CHECKPOINT
}
#: Variables that feed no flag: where things run, or a positional argument.
NOT_FLAGS = {"PYTHON", "VENV", "TABLE"}
MAKE_CALL = re.compile(r"\$\(call\s+(opt|opt_given|flag|opts),(--[a-z0-9-]+),([A-Za-z0-9_]+)\)")


def sentinel(name: str) -> str:
    return f"v-{name.lower()}"


def upper_snake(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_").upper()


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def make_calls() -> list[tuple[str, str, str]]:
    """(kind, flag, variable) of every opt/flag call in the Makefile, comments left out."""
    lines = [ln for ln in MAKEFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    return MAKE_CALL.findall("\n".join(lines))


def bool_variables() -> set[str]:
    return {var for kind, _, var in make_calls() if kind == "flag"}


def cli_targets() -> list[str]:
    return [
        t.name for t in TARGETS if "AVEL" in t.recipe or "$(cmd_" in t.recipe or "cmd_" in t.recipe
    ]


def test_every_variable_is_named_after_the_flag_it_feeds() -> None:
    calls = make_calls()
    assert len(calls) > 80
    wrong = [(flag, var) for _, flag, var in calls if upper_snake(flag) != var]
    assert not wrong, f"Make variables not named after their flag: {wrong}"
    undefined = {var for _, _, var in calls} - USER_VARIABLES
    assert not undefined, f"used but never defined with ?=: {undefined}"
    named = {"FORCE", "ALLOW_RANDOM_WEIGHTS", "NO_DOWNLOAD", "MERGE", "AUDIO_MAPS", "NO_CHECKSUM"}
    named |= {"BACKGROUND_VIDEOS", "RETRY_FAILED", "OFFLINE", "QUICK", "NO_PROGRESS"}
    assert named <= bool_variables()  # the yes/no rule below is checked for each of them


def test_each_variable_is_defined_once_before_use() -> None:
    lines = MAKEFILE.read_text().splitlines()
    defined: dict[str, int] = {}
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Z][A-Z0-9_]*)\s*(\?=|:=|=)", line)
        if m:
            assert m.group(1) not in defined, (
                f"{m.group(1)} defined twice (lines {defined[m.group(1)] + 1}, {i + 1})"
            )
            defined[m.group(1)] = i
    first_rule = next(i for i, line in enumerate(lines) if re.match(r"^[a-z][a-z-]*:", line))
    late = [v for v in USER_VARIABLES if defined[v] > first_rule]
    assert not late, f"defined after the first rule: {late}"


def test_recipes_pass_only_existing_flags_and_every_flag_has_its_variable() -> None:
    """`make -n` of every target with every variable set: each flag printed exists on its command,
    carries its own variable's value, and together they cover every flag of every command."""
    bools = bool_variables()
    values = {
        v: ("yes" if v in bools else sentinel(v)) for v in USER_VARIABLES - {"PYTHON", "VENV"}
    }
    values["TABLE"] = "models"
    args = [f"{k}={v}" for k, v in values.items()]
    sentinels = {sentinel(v): v for v in USER_VARIABLES}
    parsers = subcommands()
    covered: dict[str, set[str]] = {name: set() for name in parsers}
    for target in cli_targets():
        out = make(target, *args, dry_run=True).stdout
        commands = avel_commands(out)
        assert commands, f"make -n {target} ran no avel command:\n{out}"
        for argv in commands:
            name = argv[0]
            options = {s: a for a in parsers[name]._actions for s in a.option_strings}
            for token in argv[1:]:
                if not token.startswith("--"):
                    continue
                flag, _, value = token.partition("=")
                assert flag in options, f"make {target}: avel {name} has no flag {flag}"
                covered[name].update(options[flag].option_strings)
                if not value:
                    assert upper_snake(flag) in bools, (target, flag)
                    continue
                allowed = COMPUTED.get((name, flag), set()) | {upper_snake(flag)}
                origin = sentinels.get(value) or next(
                    (v for s, v in sentinels.items() if s in value), None
                )
                assert origin in allowed, f"make {target}: {flag}={value!r} comes from {origin}"
    missing = {
        name: sorted(
            a.option_strings[-1]
            for a in p._actions
            if a.option_strings
            and not set(a.option_strings) & covered[name]
            and not set(a.option_strings) & set(UNMAPPED)
        )
        for name, p in parsers.items()
    }
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"CLI flags without a Make variable: {missing}"


@pytest.mark.parametrize("target", ["annotations", "attention-maps", "evaluate"])
def test_values_reach_the_cli_intact(target: str) -> None:
    """IDs and paths starting with '-', with spaces and both quotes, parse back exactly (a literal
    '$' is written '$$', as everywhere in Make)."""
    odd = {
        "DATA_DIR": "-my data",
        "RUN": '-runs/it\'s a "run"',
        "VIDEO": "-x_AbC-123",
        "OUT": "out  two spaces/$$HOME.png",
        "AVE_ANNOTATIONS": "'quoted'.txt",
        "LABELS": "Bark;Car, automobile",
        "SPLIT": "test",
    }
    out = make(target, *(f"{k}={v}" for k, v in odd.items()), dry_run=True).stdout
    argv = avel_commands(out)[-1]
    args = build_parser().parse_args(argv)
    assert args.data_dir == Path(odd["DATA_DIR"])
    if target == "annotations":
        assert args.ave_annotations == odd["AVE_ANNOTATIONS"] and args.labels == odd["LABELS"]
    elif target == "attention-maps":
        assert (args.run_option, args.video, args.out) == (
            Path(odd["RUN"]),
            odd["VIDEO"],
            Path(odd["OUT"].replace("$$", "$")),
        )
    else:
        assert args.run == Path(odd["RUN"])


def _users_of(var: str) -> str:
    return next(t.name for t in TARGETS if var in t.variables and t.name in cli_targets())


@pytest.mark.parametrize("var", sorted(bool_variables()))
def test_one_yes_no_rule_for_every_flag_variable(var: str) -> None:
    target = _users_of(var)
    flag = "--" + var.lower().replace("_", "-")
    base = ["DATA_DIR=a b", "CHECKPOINT=x.pt", "RUN=r", "VIDEO=v"]  # a space: no chaining
    for value, on in [("1", True), ("yes", True), ("TRUE", True), ("Yes", True), ("true", True)]:
        argv = avel_commands(make(target, *base, f"{var}={value}", dry_run=True).stdout)[-1]
        assert (flag in argv) is on, (var, value, argv)
    for value in ("0", "no", "false", "FALSE", "No", ""):
        argv = avel_commands(make(target, *base, f"{var}={value}", dry_run=True).stdout)[-1]
        assert flag not in argv, (var, value, argv)
    bad = make(target, *base, f"{var}=maybe", dry_run=True, check=False)
    assert bad.returncode != 0 and f"{var}=maybe: use 1/yes/true or 0/no/false" in bad.stderr


def test_every_target_with_a_force_flag_passes_force() -> None:
    parsers = subcommands()
    for target in cli_targets():
        argv_all = avel_commands(
            make(target, "FORCE=1", "DATA_DIR=a b", "CHECKPOINT=c.pt", dry_run=True).stdout
        )
        for argv in argv_all:
            has = any("--force" in a.option_strings for a in parsers[argv[0]]._actions)
            assert ("--force" in argv) == has, (target, argv)


def _plan(data_dir: Path | str, target: str = "train-supervised") -> list[str]:
    out = make(target, f"DATA_DIR={data_dir}", dry_run=True).stdout
    return [" ".join(argv[:2]) if argv[0] == "train" else argv[0] for argv in avel_commands(out)]


def test_stage_targets_chain_by_what_they_produce(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _plan(data) == ["annotations", "download", "segments", "features", "train supervised"]
    assert _plan(data, "segments") == ["annotations", "download", "segments"]
    (data / "clips").mkdir(parents=True)
    (data / "manifest.parquet").touch()
    (data / "clips" / "status.parquet").touch()
    assert _plan(data) == ["segments", "features", "train supervised"]
    (data / "segments.parquet").touch()
    for store in ("audio", "visual"):
        (data / "features" / store).mkdir(parents=True)
        (data / "features" / store / "index.parquet").touch()
    assert _plan(data) == ["train supervised"]
    assert _plan(data, "features") == ["features"]  # a named stage always runs (it resumes)
    spaced = tmp_path / "my data"  # Make cannot name such files: no chaining, the command alone
    assert _plan(spaced) == ["train supervised"]


def test_run_targets_read_the_data_folder_from_the_run() -> None:
    for target in ("evaluate", "evaluate-crossmodal", "attention-maps"):
        argv = avel_commands(make(target, "RUN=r", "VIDEO=v", dry_run=True).stdout)[-1]
        assert not any(a.startswith("--data-dir") for a in argv), (target, argv)
        argv = avel_commands(make(target, "RUN=r", "VIDEO=v", "DATA_DIR=d", dry_run=True).stdout)[
            -1
        ]
        assert "--data-dir=d" in argv, (target, argv)


def test_help_lists_every_target_with_its_variables() -> None:
    text = MAKEFILE.read_text()
    phony = set(
        " ".join(re.findall(r"^\.PHONY:(.*?)(?<!\\)$", text, re.M | re.S))
        .replace("\\", " ")
        .split()
    )
    documented = {t.name for t in TARGETS}
    assert phony == documented, f"targets without '## description': {phony ^ documented}"
    out = make("help").stdout
    listed = re.findall(r"^  ([a-z][a-z-]*)\s", out, re.M)
    assert listed == [t.name for t in TARGETS] and len(listed) >= 25
    block = out.split("\n  evaluate ")[1].split("\n  evaluate-crossmodal")[0]
    for var in ("RUN", "CHECKPOINT", "SPLIT", "DATA_DIR", "FORCE=1"):
        assert var in block.split(), (var, block)


def test_clean_removes_caches_and_nothing_else(tmp_path: Path) -> None:
    keep = [
        tmp_path / "data/clips/abc.mp4",
        tmp_path / "data/weights/vggish/vggish_model.pt",
        tmp_path / "data/features/audio/index.parquet",
        tmp_path / "runs/x/seed-1/best.pt",
        tmp_path / "pipeline/core/io.py",
    ]
    caches = [
        tmp_path / ".pytest_cache/v/x",
        tmp_path / ".ruff_cache/x",
        tmp_path / "pipeline/core/__pycache__/io.pyc",
        tmp_path / "tests/__pycache__/t.pyc",
    ]
    for path in keep + caches:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    make("clean", cwd=tmp_path)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in caches)

    refused = make("delete-data", cwd=tmp_path, check=False)  # DATA_DIR not named: refused
    assert refused.returncode != 0 and "name it" in refused.stderr
    assert all(p.exists() for p in keep)
    make("delete-runs", "RUN_DIR=runs", cwd=tmp_path)
    assert not (tmp_path / "runs").exists() and (tmp_path / "data").exists()
    odd = tmp_path / "-my data"
    (odd / "clips").mkdir(parents=True)
    make("delete-data", f"DATA_DIR={odd.name}", cwd=tmp_path)
    assert not odd.exists() and (tmp_path / "data/clips/abc.mp4").exists()


def test_setup_and_test_targets_install_what_they_run() -> None:
    """Not run here (they install into the venv): their plans. `make test` installs the ray and
    foundation extras so the Ray engine's and the CLIP/CLAP tests run in CI."""
    out = make("test", "VENV=/nonexistent/venv", dry_run=True).stdout
    assert '.[tf,dev,ray,foundation]"' in out and "-m pytest -q" in out
    out = make("docs-check", "VENV=/nonexistent/venv", dry_run=True).stdout
    assert "-m pytest -q tests/test_docs_commands.py" in out


def test_tensorflow_is_installed_only_to_convert_the_vggish_checkpoint(tmp_path: Path) -> None:
    """The tf extra: convert-vggish, setup and the tests; features and demo only while no
    converted VGGish weights are cached; every other target installs the package alone."""

    def plan(*args: str) -> str:
        return make(*args, "VENV=/nonexistent/venv", dry_run=True).stdout

    data = tmp_path / "data"
    base = plan("annotations", f"DATA_DIR={data}")
    assert "pip install -q -c requirements.lock -e ." in base and "tf" not in base
    assert '".[tf]"' in plan("convert-vggish", f"DATA_DIR={data}")
    assert '".[tf,dev]"' in plan("setup") and "python3-venv" in plan("setup")
    assert '".[tf]"' in plan("features", f"DATA_DIR={data}")
    assert '".[tf]"' not in plan("features", f"DATA_DIR={data}", "FEATURES=visual")
    assert '".[tf]"' not in plan("features", f"DATA_DIR={data}", "VGGISH_CHECKPOINT=v.pt")
    assert '".[tf]"' in plan("demo", f"DATA_DIR={data / 'demo'}")
    assert '".[tf]"' not in plan("demo", f"DATA_DIR={data / 'demo'}", "OFFLINE=1")
    converted = data / "weights" / "vggish" / "vggish_model.pt"
    converted.parent.mkdir(parents=True)
    converted.touch()
    assert '".[tf]"' not in plan("features", f"DATA_DIR={data}")
    assert '".[tf]"' not in plan("demo", f"DATA_DIR={data / 'demo'}")  # the parent's weights
