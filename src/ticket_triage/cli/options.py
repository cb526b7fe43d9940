"""Training options, declared once: generated from TrainConfig's fields (type, default, help) and
shared by `triage train`, `triage tune` and `triage distill`.

Every generated option defaults to None, meaning "not given": a YAML `--config` or a resumed
checkpoint supplies the rest, and TrainConfig its defaults, shown in the help."""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import MISSING, fields
from typing import Annotated, Any, Callable, Optional

import typer

OVERRIDES = "train_overrides"  # the keyword a decorated command receives the given options under
_PREFIX = "train__"  # the generated parameters' names, apart from the command's own


def train_options(*, exclude: tuple[str, ...] = (), flags: dict[str, str] | None = None) -> Callable:
    """Add one option per TrainConfig field (not in `exclude`) to a Typer command.

    The command declares `train_overrides: dict` and gets {field: value} for the options given.
    `flags` renames an option (e.g. {"model": "--student"}); a bool field is `--name/--no-name`."""

    def decorate(command: Callable) -> Callable:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != OVERRIDES]
        generated = _generated_parameters(set(exclude), flags or {})

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = {name[len(_PREFIX) :]: kwargs.pop(name) for name in list(kwargs) if name.startswith(_PREFIX)}
            return command(**kwargs, **{OVERRIDES: {k: v for k, v in given.items() if v is not None}})

        wrapper.__signature__ = inspect.Signature(own + generated)
        return wrapper

    return decorate


def _generated_parameters(exclude: set[str], flags: dict[str, str]) -> list[inspect.Parameter]:
    from ..training.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    params = []
    for f in fields(TrainConfig):
        if f.name in exclude:
            continue
        kind = _base_type(hints[f.name])
        flag = flags.get(f.name, "--" + f.name.replace("_", "-"))
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        option = typer.Option(*decls, help=_help(f), show_default=False)
        params.append(
            inspect.Parameter(
                _PREFIX + f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[Optional[kind], option],
            )
        )
    return params


def _base_type(hint: Any) -> type:
    # `int | None` -> int: every generated option is optional anyway.
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _help(f) -> str:
    text = f.metadata.get("help", "")
    if "Default:" in text or f.default is MISSING or f.default is None:
        return text
    shown = {True: "on", False: "off"}.get(f.default, f.default) if isinstance(f.default, bool) else f.default
    # Not "[default: ...]": Typer's help renderer reads square brackets as markup and drops them.
    return f"{text} Default: {shown}."


def train_config_from(config: Any, overrides: dict[str, Any], *, resume_from: Any = None):
    """The TrainConfig of a command: a YAML `config` (if given) under the options given. With
    `resume_from` (a run folder holding a checkpoint) the checkpoint's own config, under the
    options given where they are safe to change (training.checkpoint.resume_config)."""
    from ..training import TrainConfig
    from ..training.checkpoint import resume_config

    def fresh() -> TrainConfig:
        return TrainConfig.from_yaml(config, **overrides) if config else TrainConfig.from_dict(overrides)

    if resume_from is None:
        return fresh()
    given = {**(TrainConfig.read_yaml(config) if config else {}), **overrides}
    return resume_config(resume_from, given, fresh)
