"""``make help``: every Make target with its description and the variables its recipe reads.

Read from the Makefile itself (standard library only: it runs before the package is installed):
a target is documented by ``target: ... ## description``; its variables are the user variables
(``NAME ?= ...``) that its recipe reads, directly or through the recipe macros it calls.
Run as ``python3 pipeline/cli/make_help.py Makefile``.
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

_RULE = re.compile(r"^([a-z][a-z0-9-]*)\s*:[^=].*?##\s*(.*)$")
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(\?=|:=|=)\s*(.*)$")
_CALL = re.compile(
    r"\$\(call\s+(opt|opt_given|flag|opts|bool|given),(?:[^,()]*,)?([A-Z][A-Z0-9_]*)\)"
)
_REF = re.compile(r"\$\((?:call\s+)?([A-Za-z_][A-Za-z0-9_]*)[),]")


@dataclass
class Target:
    name: str
    description: str
    recipe: str = ""
    variables: dict[str, str] = field(default_factory=dict)  # name -> "value" or "yes/no"


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    out: list[str] = []
    buf = ""
    for line in text.splitlines():
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return out


def parse_makefile(text: str) -> tuple[list[Target], set[str]]:
    """The documented targets (in file order) and the user variables (``NAME ?= ...``)."""
    user: set[str] = set()
    macros: dict[str, str] = {}
    targets: list[Target] = []
    current: Target | None = None
    for line in _logical_lines(text):
        if line.startswith("\t"):
            if current is not None:
                current.recipe += line + "\n"
            continue
        current = None
        assign = _ASSIGN.match(line)
        if assign and ":" not in line.split("=")[0]:
            name, op, value = assign.groups()
            if op == "?=":
                user.add(name)
            else:
                macros[name] = value
            continue
        rule = _RULE.match(line)
        if rule:
            current = Target(rule.group(1), rule.group(2).strip())
            targets.append(current)

    def collect(body: str, found: dict[str, str], seen: set[str]) -> None:
        for kind, name in _CALL.findall(body):
            if name in user and (kind == "flag" or name not in found):
                found[name] = "yes/no" if kind == "flag" else "value"
        for name in _REF.findall(body):
            if name in user:
                found.setdefault(name, "value")
            elif name in macros and name not in seen:
                seen.add(name)
                collect(macros[name], found, seen)

    for target in targets:
        collect(target.recipe, target.variables, set())
    return targets, user


def format_help(targets: list[Target], width: int = 100) -> str:
    col = max(len(t.name) for t in targets) + 4
    lines = [
        "make TARGET [VARIABLE=value ...]   (variables: the upper-snake-case of the CLI flag they "
        "feed;",
        "  yes/no variables take 1/yes/true or 0/no/false; `make -n TARGET` prints the plan)",
        "",
    ]
    for t in targets:
        lines.append(f"  {t.name:<{col}}{t.description}")
        names = [f"{n}=1" if k == "yes/no" else n for n, k in t.variables.items()]
        if names:
            wrapped = textwrap.wrap(" ".join(names), width - col - 2)
            lines += [" " * (col + 2) + w for w in wrapped]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "Makefile")
    targets, _ = parse_makefile(path.read_text())
    print(format_help(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
