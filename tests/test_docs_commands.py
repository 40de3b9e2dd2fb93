"""Every command the documentation shows is exercised, so the docs cannot rot unnoticed.

The docs are README.md, docs/*.md and the folders' README.md. A command is a line of a shell code
block (fenced ``bash``/``sh``, or indented) or an inline code span that starts with a known program
(``make``, ``avel``, ``python -m``, ``pip install``, ``docker``, ...); comments and prose are not.
Each command fits exactly one rule:

- ``make TARGET VAR=value``: the target exists and reads every variable; ``make -n`` (which runs
  nothing) succeeds and prints each variable as the flag it feeds; every ``avel`` command it prints
  parses with the CLI's own parser. ``make help`` runs for real.
- ``avel ...`` (or ``python -m pipeline.cli ...``): the subcommand exists and the flags parse with
  the values shown (parse only); ``--help`` and ``--version`` run for real.
- ``python -m MODULE``: the module's ``--help`` runs for real and lists every flag shown.
- ``pip install``: the extras and packages are the ones pyproject.toml declares.
- ``docker build`` / ``docker run``: the Dockerfile, its build arguments and volumes exist; the
  command run in the image is checked by its own rule.
- :data:`NOT_CHECKED`: commands that cannot be checked here, each with its reason.

Placeholders (:func:`is_placeholder`): ``<...>``, ``...``, an all-capitals word (``FILE``, ``N``)
and shell expansions (``$i``, ``$(id -u)``) stand for a value; the check substitutes the first of
``1`` / ``x`` the flag's type accepts (its first choice when it has choices). ``[...]`` around
flags or variables marks them optional: they are checked as if given. ``a|b`` (no spaces) is one
of the alternatives: each is checked. ``...`` alone elides further arguments, and a flag named
last without its value (``avel evaluate --run`` in prose) stands for the flag with any value.
A command shown only in prose, or with arguments elided, may leave out required arguments
(``avel train`` names the command); one in a code block must be whole. ``AVEL_X=1`` before a
command must turn on avel's global ``--x``. :data:`REFUSED`: commands the docs show being refused.

The Python blocks: each compiles, its imports resolve, every ``avel.NAME`` exists and each call
binds to the signature of what it calls (``**kwargs`` to the settings class it feeds,
:data:`FORWARDS`); methods called on what an API function returns exist on its return type; the
first two blocks of docs/python-api.md run for real on a data folder built by the stages
(tests/test_api.py drives the rest of the API).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import importlib
import inspect
import io
import itertools
import re
import shlex
import subprocess
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from tests.support.make import TARGETS, USER_VARIABLES, avel_commands, make, make_env
from tests.support.paths import REPO

#: Commands that cannot be checked here, matched by their start, and why.
NOT_CHECKED = {
    "git clone https://github.com/YapengTian/AVE-ECCV18": "another project's repository, fetched "
    "over the network",
    "apt-get install": "installs a Debian package as root",
    "ray start": "starts a Ray cluster node; its flags are Ray's own",
    "cp main/manifest.parquet main/classes.parquet": "copies files between the example's folders",
}
#: Make commands the docs show being refused: the message make stops with.
REFUSED = {"make delete-data": "name it"}
#: Inline spans that name a program, not a command.
PROGRAM_NAMES = {"make", "avel", "ray", "python -m", "pip install", "python -m pipeline.cli"}
PROGRAM_NAMES |= {".venv/bin/avel"}
PROGRAMS = {"make", "avel", "python", "python3", "pip", "git", "docker", "apt-get", "sudo", "ray"}
PROGRAMS |= {"cp", ".venv/bin/avel", ".venv/bin/python", ".venv/bin/pip"}
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
#: Functions of the API whose ``**kwargs`` are the fields of a settings class.
FORWARDS = {
    "avel.runs.train": "models.training.engine.TrainConfig",
    "avel.extract.extract": "pipeline.stages.features.stage.FeaturesConfig",
}
#: The blocks of docs/python-api.md that run for real (by their section), in order.
RUN_BLOCKS = ["Open a data folder", "The dataset in PyTorch"]
PLACE = "@@"  # what <...> and shell expansions become before the words are split
YES = {"1", "yes", "true"}


@dataclass
class Shown:
    """A command as the docs show it (whitespace normalised) and every place it is shown."""

    text: str
    places: list[str] = field(default_factory=list)
    in_block: bool = False  # shown in a code block (as a whole command), not only in prose


@dataclass
class Block:
    """A fenced code block: its info string, where it starts, its section and its code."""

    lang: str
    place: str
    section: str
    code: str


def doc_files() -> list[Path]:
    folders = sorted(p for p in REPO.glob("*/README.md") if not p.parent.name.startswith("."))
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *folders]


def parse_doc(path: Path) -> tuple[list[Block], str]:
    """The code blocks (fenced, and indented ones as ``sh``) and the prose, code blocks blanked
    (line numbers kept)."""
    blocks: list[Block] = []
    prose: list[str] = []
    section, fence, lang, start, code = "", None, "", 0, []
    previous = ""
    lines = path.read_text().splitlines()
    rel = path.relative_to(REPO)
    for n, line in enumerate(lines, 1):
        if fence is not None:
            if line.strip().startswith(fence):
                blocks.append(Block(lang, f"{rel}:{start}", section, "\n".join(code)))
                fence = None
            else:
                code.append(line)
            prose.append("")
            continue
        opening = re.match(r"\s*(```+|~~~+)\s*(\S*)", line)
        if opening:
            fence, lang, start, code = opening.group(1), opening.group(2), n, []
            prose.append("")
            continue
        if line.startswith("    ") and (not previous.strip() or previous.startswith("    ")):
            if blocks and blocks[-1].lang == "indented" and previous.startswith("    "):
                blocks[-1].code += "\n" + line[4:]
            else:
                blocks.append(Block("indented", f"{rel}:{n}", section, line[4:]))
            prose.append("")
        else:
            prose.append(line)
            if line.startswith("#"):
                section = line.lstrip("#").strip()
        previous = line
    assert fence is None, f"{rel}:{start}: code block never closed"
    return blocks, "\n".join(prose)


def shell_lines(code: str) -> list[tuple[int, str]]:
    """(line offset, command) of a shell block: continuations joined, comment lines left out."""
    out, buf, first = [], "", 0
    for i, line in enumerate(code.splitlines()):
        if not buf:
            first = i
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        text = " ".join(re.sub(r"(^|\s)#.*$", "", buf + line).split())  # comments left out
        buf = ""
        if text:
            out.append((first, text))
    return out


def starts_with_program(text: str) -> bool:
    words = text.split()
    while words and re.fullmatch(r"[A-Z][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    return bool(words) and words[0] in PROGRAMS


@cache
def documented() -> tuple[list[Shown], list[Block]]:
    """Every command the docs show (in order of first appearance) and every code block."""
    found: dict[str, Shown] = {}
    all_blocks: list[Block] = []

    def add(text: str, place: str, in_block: bool = False) -> None:
        shown = found.setdefault(text, Shown(text))
        shown.places.append(place)
        shown.in_block |= in_block

    for path in doc_files():
        blocks, prose = parse_doc(path)
        all_blocks += blocks
        for block in blocks:
            if block.lang in SHELL_BLOCKS or block.lang == "indented":
                file, line = block.place.rsplit(":", 1)
                for offset, text in shell_lines(block.code):
                    line_number = int(line) + offset + (block.lang != "indented")
                    add(text, f"{file}:{line_number}", in_block=True)
        for m in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", prose, re.S):
            text = " ".join(m.group(2).split())
            if starts_with_program(text) and text not in PROGRAM_NAMES:
                add(text, f"{path.relative_to(REPO)}:{prose.count(chr(10), 0, m.start()) + 1}")
    return list(found.values()), all_blocks


def expand(text: str) -> list[list[str]]:
    """The argument lists a shown command stands for: placeholders marked, optional groups opened,
    one list per ``&&`` part and per alternative."""
    text = re.sub(r"<[^<>]*>", PLACE, text)
    text = re.sub(r"\$\([^()]*\)|\$\{\w+\}|\$\w+", PLACE, text)
    text = re.sub(r"\[((?:--?|[A-Z][A-Z0-9_]*=)[^\[\]]*)\]", r"\1", text)
    words = shlex.split(text, comments=True)
    parts: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            parts.append([])
        else:
            parts[-1].append(word)
    out = []
    for part in parts:
        choices = []
        for word in part:
            name, eq, value = word.rpartition("=") if "|" in word else ("", "", word)
            choices.append([f"{name}{eq}{v}" for v in value.split("|")] if "|" in word else [word])
        out += [list(c) for c in itertools.product(*choices)]
    return out


def is_placeholder(value: str) -> bool:
    return value in (PLACE, "...") or bool(re.fullmatch(r"[A-Z][A-Z0-9_]*", value))


def kind(argv: list[str]) -> str:
    """The rule a command's argument list falls under ('unknown' when none)."""
    _, words = env_assignments(argv)
    text = " ".join(argv)
    if any(text.startswith(prefix) for prefix in NOT_CHECKED):
        return "not checked"
    program = words[0] if words else ""
    if program == "make":
        return "make"
    if program in ("avel", ".venv/bin/avel"):
        return "avel"
    if program in ("python", "python3", ".venv/bin/python") and words[1:2] == ["-m"]:
        return "avel" if words[2:3] == ["pipeline.cli"] else "python -m"
    if program in ("pip", ".venv/bin/pip") and words[1:2] == ["install"]:
        return "pip install"
    if program == "docker" and words[1:2] in (["build"], ["run"]):
        return f"docker {words[1]}"
    return "unknown"


def cases(wanted: str) -> list:
    shown, _ = documented()
    out = []
    for s in shown:
        for argv in expand(s.text):
            if kind(argv) == wanted:
                out.append(pytest.param(s, argv, id=" ".join(argv)[:90]))
    return out


def where(s: Shown) -> str:
    return f"{s.text!r} ({', '.join(s.places)})"


# ----------------------------------------------------------------------------- avel


def subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def stand_in(action: argparse.Action | None) -> str:
    """A value for a placeholder: the first choice, else the first of 1 / x the type accepts."""
    if action is not None and action.choices:
        return str(next(iter(action.choices)))
    convert = (action.type if action is not None else None) or str
    for candidate in ("1", "x"):
        with contextlib.suppress(ValueError, TypeError, argparse.ArgumentTypeError):
            convert(candidate)
            return candidate
    raise AssertionError(f"no stand-in value for {action}")


def with_stand_ins(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` (after the program) with placeholders replaced; and whether it names a command
    (False: global options only, or a placeholder where the command goes)."""
    parser, out, i, named = build_parser(), [], 0, False
    positionals: list[argparse.Action] = []
    while i < len(argv):
        word = argv[i]
        sub = subparsers(parser)
        options = {s: a for a in parser._actions for s in a.option_strings}
        if not word.startswith("-") and sub is not None:
            if is_placeholder(word):
                return out, False
            assert word in sub.choices, f"avel has no command {' '.join([*out, word])!r}"
            parser, named = sub.choices[word], True
            positionals = [a for a in parser._actions if not a.option_strings]
            out.append(word)
        elif word.startswith("-"):
            flag, eq, value = word.partition("=")
            action = options.get(flag)
            if eq:
                value = stand_in(action) if is_placeholder(value) else value
                out.append(f"{flag}={value.replace(PLACE, 'x')}")
            elif action is not None and action.nargs != 0:  # named last: any value
                value = argv[i + 1] if i + 1 < len(argv) else PLACE
                value = stand_in(action) if is_placeholder(value) else value
                out += [word, value.replace(PLACE, "x")]
                i += 1
            else:
                out.append(word)
        elif word != "...":  # more arguments elided
            action = positionals.pop(0) if positionals else None
            out.append(stand_in(action) if is_placeholder(word) else word.replace(PLACE, "x"))
        i += 1
    return out, named


def relaxed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` with nothing required: a command named in prose (``avel train``) or with
    arguments elided (``...``) is checked for what it shows."""
    for action in parser._actions:
        action.required = False
        if not action.option_strings and action.nargs is None:
            action.nargs = "?"
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                relaxed(sub)
    for group in parser._mutually_exclusive_groups:
        group.required = False
    return parser


def parse_avel(argv: list[str], complete: bool = True) -> argparse.Namespace | None:
    """Parse ``avel ARGV`` with the CLI's own parser (placeholders stood in for; required
    arguments may be missing unless ``complete``); None when the command is left open (its global
    options are then checked alone)."""
    args, named = with_stand_ins(argv)
    if not named:
        top = {s for a in build_parser()._actions for s in a.option_strings}
        unknown = [a for a in args if a.startswith("-") and a.split("=")[0] not in top]
        assert not unknown, f"avel has no global options {unknown}"
        return None
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser = build_parser() if complete else relaxed(build_parser())
            return parser.parse_args(args)
    except SystemExit:
        raise AssertionError(f"avel {shlex.join(args)}: {err.getvalue().strip()}") from None


@cache
def run_avel(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    return subprocess.run(
        cmd, cwd=REPO, env=make_env(), capture_output=True, text=True, timeout=120
    )


def env_assignments(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while argv and re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", argv[0]):
        name, _, value = argv[0].partition("=")
        env[name] = value
        argv = argv[1:]
    return env, argv


def check_environment(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``AVEL_X=1 COMMAND``: X is a global option of avel, and the environment turns it on."""
    from pipeline.cli.common import configure, log, settings

    top = {s for a in build_parser()._actions for s in a.option_strings}
    level = log.level
    try:
        for name, value in env.items():
            option = name.removeprefix("AVEL_").lower()
            assert name.startswith("AVEL_") and f"--{option}" in top, f"{name}: no such option"
            assert value.lower() in YES, f"{name}={value}: not a yes"
            monkeypatch.setenv(name, value)
            configure()
            assert getattr(settings, option) is True, f"{name}={value} does not turn on --{option}"
            monkeypatch.delenv(name)
    finally:
        configure()
        log.setLevel(level)


def test_avel_is_the_console_script_the_check_runs() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["avel"] == "pipeline.cli:main"  # run here as python -m pipeline.cli


@pytest.mark.parametrize(("shown", "argv"), cases("avel"))
def test_avel_command(shown: Shown, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    env, argv = env_assignments(argv)
    check_environment(env, monkeypatch)
    args = argv[3:] if argv[0].startswith(("python", ".venv/bin/python")) else argv[1:]
    if {"--help", "--version"} & set(args):  # cheap: run for real
        ran = run_avel(*args)
        assert ran.returncode == 0, f"{where(shown)}: {ran.stderr}"
        if "--version" in args:
            assert re.match(r"avel \S+", ran.stdout), ran.stdout
        else:
            assert ran.stdout.startswith("usage: avel"), ran.stdout
        if args == ["--help"]:
            commands = subparsers(build_parser()).choices
            listed = set(re.findall(r"^    (\S+)", ran.stdout, re.M))
            assert set(commands) <= listed, ran.stdout
        return
    try:
        parse_avel(args, complete(shown, argv))
    except AssertionError as exc:
        raise AssertionError(f"{where(shown)}: {exc}") from None


# ----------------------------------------------------------------------------- make


def complete(shown: Shown, argv: list[str]) -> bool:
    """Whether a command is shown whole: in a code block, with no arguments elided."""
    return shown.in_block and "..." not in argv


def printed_commands(output: str) -> list[list[str]]:
    """The avel commands of a make plan, each up to the shell operator that follows it."""
    out = []
    for argv in avel_commands(output):
        ends = [i for i, w in enumerate(argv) if w in ("||", "&&", "|", ";")]
        out.append(argv[: ends[0]] if ends else argv)
    return out


def check_make(argv: list[str], complete: bool = True) -> None:
    """The make rule (see the module's docstring) for one argument list ``make ...``."""
    words = [w for w in argv[1:] if w != "..."]
    options = [w for w in words if w.startswith("-")]
    assert set(options) <= {"-n"}, f"make options not checked here: {options}"
    assignments = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    names = [w for w in words if not w.startswith("-") and "=" not in w]
    targets = {t.name: t for t in TARGETS}
    names = ["help" if is_placeholder(n) else n for n in names]  # a placeholder target: any
    unknown = [n for n in names if n not in targets]
    assert not unknown, f"no such make target {unknown}"
    read = set().union(*(targets[n].variables for n in names or ["help"]))
    for var in assignments:
        assert var in USER_VARIABLES, f"{var} is not a variable of the Makefile"
        assert var in read, f"{var}: not read by make {' '.join(names)}"
    values = {k: PLACE if is_placeholder(v) else v for k, v in assignments.items()}
    if names == ["help"] and not options:  # cheap: run for real
        out = make("help").stdout
        assert all(f"\n  {t} " in out for t in targets), out
        return
    proc = make(*names, *(f"{k}={v}" for k, v in values.items()), dry_run=True, check=False)
    refusal = REFUSED.get(" ".join(argv))
    if refusal is not None:
        assert proc.returncode != 0 and refusal in proc.stderr, proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    argvs = printed_commands(proc.stdout)
    for var, value in values.items():
        flag = "--" + var.lower().replace("_", "-")
        if not argvs:  # a recipe of its own (rm, pytest, pip): the value is in it
            assert value in proc.stdout, f"{var}={value} not in the plan:\n{proc.stdout}"
        elif var == "TABLE":  # the positional argument of avel table
            assert any(argv[0] == "table" and argv[1] == value for argv in argvs), argvs
        elif targets[names[0]].variables.get(var) == "yes/no":
            on = any(flag in a for a in argvs)
            assert on == (value.lower() in YES), f"{var}={value}: {flag} {on=}: {argvs}"
        else:
            expected = [f"{flag}={word}" for word in value.split()] if var == "OPTION" else []
            expected = expected or [f"{flag}={value}"]
            for token in expected:
                assert any(token in a for a in argvs), f"{var}={value}: no {token} in {argvs}"
    for printed in argvs:
        parse_avel(printed, complete)


@pytest.mark.parametrize(("shown", "argv"), cases("make"))
def test_make_command(shown: Shown, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    env, argv = env_assignments(argv)
    check_environment(env, monkeypatch)
    try:
        check_make(argv, complete(shown, argv))
    except AssertionError as exc:
        raise AssertionError(f"{where(shown)}: {exc}") from None


# ----------------------------------------------------------------------------- other programs


@pytest.mark.parametrize(("shown", "argv"), cases("python -m"))
def test_python_module_command(shown: Shown, argv: list[str]) -> None:
    module, flags = argv[2], [w.split("=")[0] for w in argv[3:] if w.startswith("-")]
    cmd = [sys.executable, "-m", module, "--help"]
    ran = subprocess.run(cmd, cwd=REPO, env=make_env(), capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, f"{where(shown)}: {ran.stderr[-2000:]}"
    missing = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}\b", ran.stdout)]
    assert not missing, f"{where(shown)}: {module} has no {missing}"


@pytest.mark.parametrize(("shown", "argv"), cases("pip install"))
def test_pip_install_command(shown: Shown, argv: list[str]) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = {re.match(r"[A-Za-z0-9_.-]+", d).group().lower() for d in project["dependencies"]}
    for word in argv[2:]:
        if word.startswith("-"):
            continue
        m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", word)
        if m:  # this project, with extras
            unknown = set((m.group(1) or "").split(",")) - set(extras) - {""}
            assert not unknown, f"{where(shown)}: pyproject.toml has no extra {unknown}"
        else:
            name = re.match(r"[A-Za-z0-9_.-]+", word).group().lower()
            assert name in declared, f"{where(shown)}: {name} is not a dependency in pyproject.toml"


def dockerfile(path: str) -> str:
    file = REPO / path
    assert file.is_file(), f"no {path}"
    return re.sub(r"\\\n", " ", file.read_text())


@pytest.mark.parametrize(("shown", "argv"), cases("docker build"))
def test_docker_build_command(shown: Shown, argv: list[str]) -> None:
    """The build itself is tests/test_docker.py's, where a daemon answers."""
    words = argv[2:]
    file = words[words.index("-f") + 1]
    args = set(re.findall(r"^ARG\s+(\w+)", dockerfile(file), re.M))
    given = {words[i + 1].split("=")[0] for i, w in enumerate(words) if w == "--build-arg"}
    assert given <= args, f"{where(shown)}: {file} has no ARG {given - args}"
    assert words[-1] == ".", f"{where(shown)}: not built from the repository root"


@pytest.mark.parametrize(("shown", "argv"), cases("docker run"))
def test_docker_run_command(shown: Shown, argv: list[str]) -> None:
    words, i = argv[2:], 0
    volumes = set()
    while words[i].startswith("-"):
        if words[i] in ("-v", "--volume"):
            volumes.add(words[i + 1].split(":")[1])
        i += 1 if words[i] == "--rm" else 2
    declared = set()
    for m in re.finditer(r"^VOLUME\s+(.+)$", dockerfile("docker/Dockerfile"), re.M):
        declared |= set(re.findall(r"[\w/.-]+", m.group(1)))
    assert volumes <= declared, f"{where(shown)}: not volumes of the image: {volumes - declared}"
    inside = argv[2 + i + 1 :]
    assert kind(inside) == "make", f"{where(shown)}: {inside} fits no rule"
    check_make(inside, complete(shown, argv))


# ----------------------------------------------------------------------------- every command


def test_every_documented_command_fits_a_rule() -> None:
    shown, blocks = documented()
    kinds: dict[str, int] = {}
    unknown = []
    for s in shown:
        for argv in expand(s.text):
            k = kind(argv)
            kinds[k] = kinds.get(k, 0) + 1
            if k == "unknown":
                unknown.append(where(s))
    assert not unknown, "documented commands no rule checks (add one, or to NOT_CHECKED):\n" + (
        "\n".join(unknown)
    )
    assert len(shown) > 80 and kinds["make"] > 50 and kinds["avel"] > 15, kinds
    langs = {b.lang for b in blocks}
    assert langs <= SHELL_BLOCKS | {"python", "", "indented"}, (
        f"code blocks of no known kind: {langs}"
    )
    stale = [p for p in NOT_CHECKED if not any(s.text.startswith(p) for s in shown)]
    assert not stale, f"NOT_CHECKED entries no longer documented: {stale}"
    refused = [r for r in REFUSED if r not in {s.text for s in shown}]
    assert not refused, f"REFUSED entries no longer documented: {refused}"


def test_placeholders_and_alternatives_expand_as_documented() -> None:
    """The explicit rule, on the forms the docs use."""
    assert expand("make table TABLE=a|b [EPOCHS=N] && make help") == [
        ["make", "table", "TABLE=a", "EPOCHS=N"],
        ["make", "table", "TABLE=b", "EPOCHS=N"],
        ["make", "help"],
    ]
    assert expand("avel x --out runs/release-<file name> [--arch a|b] ...") == [
        ["avel", "x", "--out", f"runs/release-{PLACE}", "--arch", "a", "..."],
        ["avel", "x", "--out", f"runs/release-{PLACE}", "--arch", "b", "..."],
    ]
    assert expand('pip install -e ".[ray]" --num $K') == [
        ["pip", "install", "-e", ".[ray]", "--num", PLACE]
    ]
    assert all(is_placeholder(v) for v in ("FILE", "N", PLACE, "...")) and not is_placeholder("x1")
    with pytest.raises(AssertionError, match="no command"):
        parse_avel(["no-such-command"])
    with pytest.raises(AssertionError, match="unrecognized arguments: --no-such-flag"):
        parse_avel(["features", "--no-such-flag"])
    with pytest.raises(AssertionError, match="--workers: .*x"):
        parse_avel(["features", "--workers", "x"])
    assert parse_avel(["download", "--num-shards", PLACE]).num_shards == 1  # typed stand-in
    with pytest.raises(AssertionError, match="not a variable"):
        check_make(["make", "features", "NO_SUCH_VARIABLE=1"])
    with pytest.raises(AssertionError, match="no such make target"):
        check_make(["make", "no-such-target"])


# ----------------------------------------------------------------------------- Python


def python_blocks() -> list[Block]:
    return [b for b in documented()[1] if b.lang == "python"]


def _resolve(node: ast.AST, names: dict[str, object]) -> object | None:
    """The object an expression names (``avel.train``, ``StoreSpec``), or None when unknown."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, names)
        if inspect.ismodule(owner):
            assert hasattr(owner, node.attr), f"{owner.__name__} has no {node.attr}"
            return getattr(owner, node.attr)
    return None


def bind(target: object, positional: int, keywords: list[str]) -> None:
    """A call with ``positional`` arguments and ``keywords`` binds to ``target``'s signature; the
    keywords a ``**kwargs`` takes are fields of the settings it forwards them to (:data:`FORWARDS`)."""
    parameters = inspect.signature(target).parameters
    named = [k for k in keywords if k in parameters]
    inspect.signature(target).bind(*[None] * positional, **dict.fromkeys(named))
    extra = set(keywords) - set(named)
    if not extra:
        return
    name = f"{target.__module__}.{target.__qualname__}"
    assert name in FORWARDS, f"{name} takes {sorted(extra)} as **kwargs: add it to FORWARDS"
    module, cls = FORWARDS[name].rsplit(".", 1)
    fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
    assert extra <= fields, f"{name}: {sorted(extra - fields)} are not {cls} fields"


def _has(cls: type, name: str) -> bool:
    return hasattr(cls, name) or any(name in getattr(k, "__annotations__", {}) for k in cls.__mro__)


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.place)
def test_python_block_names_what_exists(block: Block) -> None:
    tree = ast.parse(block.code, filename=block.place)
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name] = importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{block.place}: {node.module}.{alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
    if "avel" not in names and "avel." in block.code:
        names["avel"] = importlib.import_module("avel")  # the page's earlier `import avel`
    checked = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            _resolve(node, names)
        if isinstance(node, ast.Call):
            target = _resolve(node.func, names)
            starred = any(isinstance(a, ast.Starred) for a in node.args)
            if target is None or starred or any(k.arg is None for k in node.keywords):
                if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Call):
                    made = _resolve(node.func.value.func, names)  # avel.open_store(...).gather
                    hints = typing.get_type_hints(made) if callable(made) else {}
                    cls = hints.get("return")
                    if isinstance(cls, type) and cls is not typing.Any:
                        assert _has(cls, node.func.attr), f"{block.place}: {cls} .{node.func.attr}"
                continue
            try:
                bind(target, len(node.args), [k.arg for k in node.keywords])
            except (TypeError, AssertionError) as exc:
                raise AssertionError(f"{block.place}: {ast.unparse(node)}: {exc}") from None
            checked += 1
        if isinstance(node, ast.ClassDef):  # a subclass shown: it overrides what the base has
            for base in (_resolve(b, names) for b in node.bases):
                if not isinstance(base, type):
                    continue
                for item in node.body:
                    own = [item.name] if isinstance(item, ast.FunctionDef) else []
                    if isinstance(item, ast.Assign):
                        own = [t.id for t in item.targets if isinstance(t, ast.Name)]
                    for name in own:
                        assert _has(base, name), f"{block.place}: {base.__name__} has no {name}"
    assert checked or "class " in block.code, f"{block.place}: no call checked"


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``data``: one generated clip (train) through the stages, random backbone
    weights asked for explicitly, one frame a second."""
    import pandas as pd

    from pipeline.core.io import write_parquet
    from pipeline.stages.annotations.stage import AnnotationsConfig, run_annotations
    from pipeline.stages.download.stage import DownloadConfig, run_download
    from pipeline.stages.features.stage import FeaturesConfig, run_features
    from pipeline.stages.segments import SegmentsConfig, run_segments
    from tests.support.media import make_clip

    root = tmp_path_factory.mktemp("docs")
    data, incoming, table = root / "data", root / "incoming", root / "clips.parquet"
    incoming.mkdir()
    make_clip(incoming / "docClip0001_0.mp4", duration=10, fps=4, frequency=440)
    row = {"youtube_id": ["docClip0001"], "start": [0.0], "end": [10.0], "label": ["tone"]}
    write_parquet(pd.DataFrame({**row, "split": ["train"]}), table)
    run_annotations(AnnotationsConfig(data_dir=data, clip_list=[str(table)]))
    run_download(DownloadConfig(data_dir=data, from_dir=incoming, progress=False))
    run_segments(SegmentsConfig(data_dir=data, progress=False, frames_per_segment=1, workers=1))
    settings = {"device": "cpu", "precision": "fp32", "workers": 1}
    settings |= {"vgg19_weights": "random", "allow_random_weights": True, "allow_download": False}
    summary = run_features(
        FeaturesConfig(data_dir=data, progress=False, features=("audio", "visual"), **settings)
    )
    assert not summary["errors"], summary["errors"]
    return root


def test_python_api_blocks_run_on_a_data_folder(
    data_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = {b.section: b for b in python_blocks() if b.place.startswith("docs/python-api.md")}
    missing = [s for s in RUN_BLOCKS if s not in blocks]
    assert not missing, f"docs/python-api.md has no python block under {missing}"
    monkeypatch.chdir(data_folder)
    namespace: dict[str, object] = {}
    for section in RUN_BLOCKS:
        exec(compile(blocks[section].code, blocks[section].place, "exec"), namespace)
    assert namespace["names"][-1] == "background" and namespace["audio"].shape == (1, 10, 128)
    assert namespace["batch"]["segment_labels"].shape == (1, 10)


def test_readme_stays_an_overview() -> None:
    """The rest belongs in docs/."""
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines: move details to docs/"
