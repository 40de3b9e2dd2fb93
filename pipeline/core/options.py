"""A stage's options, declared once: each field of its config dataclass carries its default, its
help and how the CLI offers it; the CLI's flags are made from the config (and the Makefile's
variables are checked against the flags by the tests)."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields
from typing import Any


def option(default: Any, help: str, **cli: Any) -> Any:
    """A config field that is also a CLI option. ``cli`` keywords: ``type``, ``choices``,
    ``flag`` (another flag name), ``invert`` (a yes/no option offered as its negation, e.g.
    ``--no-download`` for ``allow_download``), ``list_of`` (a comma list of these words),
    ``cli=False`` (not offered)."""
    return field(default=default, metadata={"help": help, **cli})


def cli_fields(config: type) -> list[tuple[str, Field]]:
    """(flag, field) of every field of ``config`` the CLI offers, in declaration order."""
    out = []
    for f in fields(config):
        if "help" not in f.metadata or f.metadata.get("cli", True) is False:
            continue
        out.append((f.metadata.get("flag") or "--" + f.name.replace("_", "-"), f))
    return out


def add_options(parser: argparse.ArgumentParser, config: type) -> None:
    """One flag per option of ``config``, with its default and help."""
    for flag, f in cli_fields(config):
        meta = f.metadata
        default = f.default if f.default is not MISSING else None
        kwargs: dict[str, Any] = {"help": meta["help"], "dest": f.name}
        if isinstance(default, bool):
            kwargs.update(action="store_true", default=False)
        else:
            kwargs["default"] = ",".join(default) if isinstance(default, tuple) else default
            for key in ("type", "choices"):
                if meta.get(key):
                    kwargs[key] = list(meta[key]) if key == "choices" else meta[key]
            if default is not None:
                kwargs["help"] += f" (default {kwargs['default']})"
        parser.add_argument(flag, **kwargs)


def config_from(config: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """``config`` from parsed flags (plus ``fixed`` values)."""
    values = {}
    for _, f in cli_fields(config):
        value = getattr(args, f.name)
        if f.metadata.get("invert"):
            value = not value
        if f.metadata.get("list_of") and isinstance(value, str):
            value = tuple(w.strip() for w in value.split(",") if w.strip())
        values[f.name] = value
    return config(**values, **fixed)


def _number(kind: type, minimum: float, inclusive: bool, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}")
        if value < minimum or (not inclusive and value == minimum):
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


#: argparse ``type``s for counts and durations: refused at parse time (exit 2) when out of range.
positive_int = _number(int, 1, True, "a positive integer")
non_negative_int = _number(int, 0, True, "an integer >= 0")
positive_float = _number(float, 0, False, "a positive number")
non_negative_float = _number(float, 0, True, "a number >= 0")
