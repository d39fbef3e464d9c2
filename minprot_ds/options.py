"""Every job's options, declared once: a dataclass whose fields carry their help (`option(...)`).

From it come the job's `minprot` command (`typer_command`), its launch/ script's parser (`argument_parser`,
`launch`) and its MLflow params (`mlflow_params`). Values with a fixed set of choices are validated by the
component that reads them (one UserError naming the flag), not by either parser. Standard library and
typer only: `minprot --help` builds every command from these without importing a job.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from minprot_ds.errors import UserError, os_error_line
from minprot_ds.progress import quiet_libraries

LAUNCHER_FLAGS = ("--local_rank", "--local-rank")  # what the deepspeed launcher appends to every rank's argv


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    cli: bool = True,
    aliases: tuple[str, ...] = (),
    deprecated: tuple[str, ...] = (),
    flag: str | None = None,
    min: int | float | None = None,
    max: int | float | None = None,
    metavar: str | None = None,
    factory: Callable[[], Any] | None = None,
    log: bool | None = None,
    positional: bool = False,
) -> Any:
    """A dataclass field carrying its command-line help.

    cli=False: settable from Python only. aliases: more flags, shown in --help. deprecated: old flags that
    still work, hidden, with a one-line warning. flag: the flag when it is not the field's name with dashes.
    min, max: the smallest and largest value a number may take (both parsers refuse others and --help shows
    the range; `check_bounds` refuses them from Python). factory: a default_factory (lists: a repeatable flag).
    log=False: not an MLflow param (default: logged when it is a command-line option).
    positional: a command-line argument (named by its metavar, default the field's name in capitals), not a flag.
    """
    metadata = {
        "help": help,
        "cli": cli,
        "aliases": tuple(aliases),
        "deprecated": tuple(deprecated),
        "flag": flag,
        "min": min,
        "max": max,
        "metavar": metavar,
        "log": cli if log is None else log,
        "positional": positional,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class CliField:
    field: dataclasses.Field
    hint: Any  # the type without Optional; list[X] for repeatable flags
    optional: bool  # None is allowed

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def positional(self) -> bool:
        return self.field.metadata.get("positional", False)

    @property
    def flag(self) -> str:
        """The flag, or for a positional argument the name --help shows (its metavar)."""
        if self.positional:
            return self.field.metadata["metavar"] or self.name.upper()
        return self.field.metadata["flag"] or "--" + self.name.replace("_", "-")

    @property
    def flags(self) -> list[str]:
        return [self.flag, *self.field.metadata["aliases"]]

    @property
    def help(self) -> str:
        return self.field.metadata["help"]

    @property
    def required(self) -> bool:
        return self.field.default is dataclasses.MISSING and self.field.default_factory is dataclasses.MISSING

    @property
    def default(self) -> Any:
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return self.field.default

    @property
    def repeated(self) -> bool:
        return typing.get_origin(self.hint) is list


def cli_fields(cls: type) -> list[CliField]:
    """Every command-line option of a job's dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", False):
            continue
        hint, optional = hints[f.name], False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint, optional = args[0], True
        out.append(CliField(f, hint, optional))
    return out


def warn_deprecated(old: str, new: str) -> None:
    print(f"warning: {old} is deprecated and will be removed; use {new}", file=sys.stderr)


def _out_of_range(value: Any, low: int | float | None, high: int | float | None, flag: str) -> str:
    """'' when `value` is within [low, high], else the sentence that refuses it."""
    if (low is None or value >= low) and (high is None or value <= high):
        return ""
    allowed = " and ".join(
        ([f"at least {low}"] if low is not None else []) + ([f"at most {high}"] if high is not None else [])
    )
    return f"{flag} must be {allowed}, not {value}"


def check_bounds(options: Any) -> None:
    """Refuse a value outside its option's declared range (min=, max=): one UserError naming the flag. The
    parsers already refuse them; this guards jobs started from Python."""
    for c in cli_fields(type(options)):
        low, high = c.field.metadata["min"], c.field.metadata["max"]
        value = getattr(options, c.name)
        if (low is None and high is None) or value is None or c.hint is bool:
            continue
        for v in value if c.repeated else [value]:
            problem = _out_of_range(v, low, high, c.flag)
            if problem:
                raise UserError(problem)


def _bounds_help(meta: dict[str, Any]) -> str:
    low, high = meta["min"], meta["max"]
    if low is not None and high is not None:
        return f" [{low} to {high}]"
    if low is not None:
        return f" [at least {low}]"
    return f" [at most {high}]" if high is not None else ""


def _bounded(kind: type, low: int | float | None, high: int | float | None, flag: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        value = kind(text)
        problem = _out_of_range(value, low, high, flag)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


class _DeprecatedFlag(argparse.Action):
    def __init__(self, *args: Any, new: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        warn_deprecated(option_string, self.new)
        setattr(namespace, self.dest, values)


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, launcher: bool = False) -> argparse.ArgumentParser:
    """Every option of `cls` as an argparse flag (dest = the field name); launcher: also accept and ignore the
    launcher's --local_rank."""
    for c in cli_fields(cls):
        meta = c.field.metadata
        if c.hint is bool:
            parser.add_argument(
                *c.flags, dest=c.name, action=argparse.BooleanOptionalAction, default=c.default, help=c.help
            )
            continue
        item = typing.get_args(c.hint)[0] if c.repeated else c.hint
        bounded = meta["min"] is not None or meta["max"] is not None
        kind = _bounded(item, meta["min"], meta["max"], c.flag) if bounded else item
        extra: dict[str, Any] = {"metavar": meta["metavar"]} if meta["metavar"] else {}
        help = (c.help + _bounds_help(meta)).replace("%", "%%")  # argparse formats help with %
        if c.positional:
            parser.add_argument(c.name, type=kind, help=help, metavar=c.flag)
        elif c.repeated:
            parser.add_argument(
                *c.flags, dest=c.name, type=kind, action="append", default=None, help=help + " (repeatable)", **extra
            )
        elif c.required:
            parser.add_argument(*c.flags, dest=c.name, type=kind, required=True, help=help, **extra)
        else:
            parser.add_argument(*c.flags, dest=c.name, type=kind, default=c.default, help=help, **extra)
        for old in meta["deprecated"]:
            parser.add_argument(
                old,
                dest=c.name,
                type=kind,
                action=_DeprecatedFlag,
                new=c.flag,
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
    if launcher:
        parser.add_argument(*LAUNCHER_FLAGS, dest="local_rank", type=int, default=-1, help=argparse.SUPPRESS)
    return parser


def from_namespace(cls: type, namespace: argparse.Namespace) -> Any:
    """The dataclass from what `add_arguments`' flags parsed (the launcher's --local_rank dropped)."""
    values = {}
    for c in cli_fields(cls):
        value = getattr(namespace, c.name)
        values[c.name] = c.default if c.repeated and value is None else value
    return cls(**values)


def argument_parser(cls: type, description: str = "") -> argparse.ArgumentParser:
    """A launch/ script's parser of one job (its launcher's --local_rank accepted and ignored)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return add_arguments(parser, cls, launcher=True)


def launch(
    jobs: dict[str, tuple[type, Callable[[Any], int | None]]],
    *,
    description: str,
    argv: list[str] | None = None,
    default: str | None = None,
) -> int:
    """What a launch/ script runs on every rank: parse argv into the job's dataclass, call its body; a
    UserError or an OSError prints as one line on stderr and exits 1. Several jobs: the first argument names
    one (default: `default`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(jobs) == 1:
        ((cls, body),) = jobs.values()
        parser = argument_parser(cls, description)
    else:
        parser = argparse.ArgumentParser(description=description)
        commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(jobs) + "}")
        for name, (cls, _) in jobs.items():
            add_arguments(
                commands.add_parser(
                    name,
                    help=(cls.__doc__ or "").split("\n")[0],
                    description=cls.__doc__,
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                ),
                cls,
                launcher=True,
            )
        if default is not None and not (argv and argv[0] in (*jobs, "-h", "--help")):
            argv.insert(0, default)
    namespace = parser.parse_args(argv)
    cls, body = jobs[namespace.command] if len(jobs) > 1 else (cls, body)
    quiet_libraries()
    try:
        code = body(from_namespace(cls, namespace))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # as the CLI does (cli.common.run_cli): the file and the reason, no traceback
        print(os_error_line(err), file=sys.stderr)
        return 1
    return int(code or 0)


def typer_command(
    cls: type, body: Callable[[Any], int | None], doc: str, name: str, *, launcher: bool = False
) -> Callable[..., None]:
    """A function whose signature typer reads as the command's options; it calls body(cls(...)) and exits with
    body's status when it returns one. launcher: accept and ignore the launcher's --local_rank."""
    import typer

    params, deprecated = [], {}
    for c in cli_fields(cls):
        meta = c.field.metadata
        default = ... if c.required else (None if c.repeated else c.default)
        extra: dict[str, Any] = {k: meta[k] for k in ("min", "max") if meta[k] is not None}
        if meta["metavar"]:
            extra["metavar"] = meta["metavar"]
        if c.positional:
            info = typer.Argument(default, help=c.help, metavar=c.flag, show_default=False)
        elif c.hint is bool:
            flags = [f"{c.flag}/--no-{c.flag.removeprefix('--')}", *meta["aliases"]]
            info = typer.Option(default, *flags, help=c.help)
        else:
            help = c.help + (" (repeatable)" if c.repeated else "")
            info = typer.Option(default, *c.flags, help=help, show_default=not c.repeated, **extra)
        annotation = Optional[c.hint] if c.optional or c.repeated else c.hint
        params.append(inspect.Parameter(c.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation))
        for i, old in enumerate(meta["deprecated"]):
            key = f"deprecated_{c.name}_{i}"
            deprecated[key] = (c.name, old, c.flag)
            params.append(
                inspect.Parameter(
                    key,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Optional[c.hint],
                    default=typer.Option(None, old, hidden=True, **extra),
                )
            )
    if launcher:
        params.append(
            inspect.Parameter(
                "local_rank",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=int,
                default=typer.Option(-1, *LAUNCHER_FLAGS, hidden=True),
            )
        )
    repeated = [c for c in cli_fields(cls) if c.repeated]

    def command(**values: Any) -> None:
        values.pop("local_rank", None)
        for key, (field, old, new) in deprecated.items():
            value = values.pop(key)
            if value is not None:
                warn_deprecated(old, new)
                values[field] = value
        for c in repeated:
            values[c.name] = c.default if values[c.name] is None else list(values[c.name])
        code = body(cls(**values))
        if code:
            raise typer.Exit(int(code))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    command.__name__ = name.replace("-", "_")
    return command


def mlflow_params(options: Any, prefix: str = "") -> dict[str, Any]:
    """A flat dict of the fields MLflow should record (log=True): paths as text, None as "", lists joined by
    commas, nested dataclasses as `section.key`."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(options):
        if f.metadata and not f.metadata.get("log", True):
            continue
        value = getattr(options, f.name)
        if dataclasses.is_dataclass(value):
            out |= mlflow_params(value, f"{prefix}{f.name}.")
            continue
        if isinstance(value, Path):
            value = str(value)
        elif value is None:
            value = ""
        elif isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        out[prefix + f.name] = value
    return out
