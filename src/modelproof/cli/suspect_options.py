"""How commands that ask a suspect (``verify``, ``calibrate``) open it: every HTTP adapter option, from flags or a TOML file.

:func:`with_suspect_options` adds the options to a command (they arrive as one :class:`SuspectOptions`
argument ``suspect_options``); :func:`open_cli_suspect` opens a suspect with them. Flags override the
file given with ``--suspect-config``. Secrets come from the environment (``--header-env
Authorization=SUSPECT_TOKEN``) so they stay out of the shell history; a missing variable is an error
naming the variable, never its value. The key's input shape and class count are the defaults for an
endpoint whose metadata does not give them (a note on stderr says so).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..util.errors import ConfigError
from .common import with_options

F = TypeVar("F", bound=Callable[..., Any])
PANEL = "Suspect served over HTTP"

# name -> (type, help); the TOML file uses the same names (with ``headers`` / ``header_env`` / ``parameters`` tables).
_OPTIONS: dict[str, tuple[Any, str]] = {
    "suspect_config": (Path | None, "TOML file holding any of the options below (flags override it)."),
    "protocol": (str | None, "v2 (Open Inference Protocol: Triton, KServe, MLServer) or tfserving; default from the URL."),
    "model_name": (str | None, "Model name, when --suspect is the server's base URL."),
    "layout": (str | None, "NCHW (default), NHWC, flat ([N, C*H*W], channel-first order) or flat-NHWC ([N, H*W*C])."),
    "scale": (float | None, "Multiply our [0,1] pixels by this (255 for 0-255 inputs, 16 for scikit-learn digits)."),
    "mean": (str | None, "Per-channel mean subtracted after scaling, comma-separated (e.g. 0.485,0.456,0.406)."),
    "std": (str | None, "Per-channel std divided by after the mean, comma-separated."),
    "dtype": (str | None, "Input datatype: FP32 (default), FP64 or UINT8."),
    "input_name": (str | None, "Name of the model's input tensor (default 'input')."),
    "output_name": (str | None, "Name of the output to read (default: the first; labels, scores or logits)."),
    "num_classes": (int | None, "Number of classes (default: the metadata's, else the key's)."),
    "input_shape": (str | None, "Input shape C,H,W of our images (default: the metadata's, else the key's)."),
    "header": (list[str] | None, "Extra request header 'Name: value' (repeat the option)."),
    "header_env": (list[str] | None, "Header from an environment variable, Name=VARIABLE (e.g. Authorization=SUSPECT_TOKEN)."),
    "parameter": (list[str] | None, "v2 request parameter NAME=JSON (e.g. labels_only=true; repeat the option)."),
    "timeout": (float | None, "Seconds to wait for each HTTP request (default 10)."),
    "rate": (float | None, "Most HTTP requests per second (default: no limit)."),
    "retries": (int | None, "Retries of a request that can succeed on retry (default 3)."),
    "http_batch_size": (int | None, "Inputs per HTTP request (default 64)."),
    "concurrency": (int | None, "HTTP requests in flight at once, 1-16 (default 2; --rate still caps requests per second)."),
    "binary": (bool | None, "Send and receive tensors as raw bytes (the v2 binary tensor data extension); "
               "default: when the server lists binary_tensor_data in its metadata, else JSON."),
}
_LISTS = ("header", "header_env", "parameter")
_TABLES = {"headers": "header", "header_env": "header_env", "parameters": "parameter"}


@dataclass
class SuspectOptions:
    """The values of the suspect options as given on the command line (None: not given)."""

    values: dict[str, Any] = field(default_factory=dict)

    def merged(self) -> dict[str, Any]:
        """File values overridden by flags, as HttpSuspect keyword arguments."""
        file_values = _read_config(self.values.get("suspect_config"))
        flags = {k: v for k, v in self.values.items() if k != "suspect_config" and v not in (None, [])}
        return _to_kwargs({**file_values, **flags})


def _option(name: str, kind: Any, help_text: str) -> inspect.Parameter:
    flag = "--" + name.replace("_", "-")
    if kind == (bool | None):
        flag += "/--no-" + name.replace("_", "-")
    info = typer.Option(flag, help=help_text, rich_help_panel=PANEL)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, info])


def with_suspect_options(fn: F) -> F:
    """Add the suspect options to command ``fn``; it receives them as ``suspect_options: SuspectOptions``."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name, None) for name in _OPTIONS}
        return fn(*args, suspect_options=SuspectOptions(values), **kwargs)

    extra = [_option(name, kind, help_text) for name, (kind, help_text) in _OPTIONS.items()]
    return with_options(wrapper, fn, extra, drop=("suspect_options",))


def _read_config(path: Path | None) -> dict[str, Any]:
    """The options of a suspect TOML file, under the flags' names; ConfigError names an unknown key."""
    if path is None:
        return {}
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read suspect config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"suspect config {path} is not valid TOML: {exc}") from None
    out: dict[str, Any] = {}
    allowed = (set(_OPTIONS) - set(_LISTS) - {"suspect_config"}) | set(_TABLES)
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(f"suspect config {path}: unknown key {key!r}; allowed: {', '.join(sorted(allowed))}")
        if key in _TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"suspect config {path}: {key!r} must be a table of names and values")
            out[_TABLES[key]] = value
        elif key in ("mean", "std", "input_shape") and isinstance(value, list):
            out[key] = ",".join(str(v) for v in value)
        else:
            out[key] = value
    return out


def _numbers(text: Any, what: str, kind: type) -> list:
    try:
        return [kind(v) for v in str(text).replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _pairs(items: Any, sep: str, what: str) -> dict[str, str]:
    if isinstance(items, dict):
        return {str(k): str(v) for k, v in items.items()}
    out = {}
    for item in items:
        name, found, value = str(item).partition(sep)
        if not found or not name.strip():
            raise ConfigError(f"{what} must look like 'Name{sep}value', got {str(item).split(sep)[0][:40]!r}")
        out[name.strip()] = value.strip()
    return out


def _to_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """Flag values -> HttpSuspect keyword arguments (headers resolved from the environment)."""
    kw = {k: v for k, v in opts.items() if k not in _LISTS}
    for name, kind in (("mean", float), ("std", float), ("input_shape", int)):
        if name in kw:
            kw[name] = _numbers(kw[name], f"--{name.replace('_', '-')}", kind)
    if "input_shape" in kw:
        if len(kw["input_shape"]) != 3:
            raise ConfigError(f"--input-shape must be C,H,W (three integers), got {kw['input_shape']}")
        kw["input_shape"] = tuple(kw["input_shape"])
    if "rate" in kw:
        kw["rate_limit"] = kw.pop("rate")
    if "http_batch_size" in kw:
        kw["batch_size"] = kw.pop("http_batch_size")
    headers = _pairs(opts.get("header", []), ":", "--header")
    for name, variable in _pairs(opts.get("header_env", []), "=", "--header-env").items():
        if variable not in os.environ:
            raise ConfigError(f"--header-env {name}={variable}: environment variable {variable} is not set")
        headers[name] = os.environ[variable]
    if headers:
        kw["headers"] = headers
    params = opts.get("parameter", [])
    if params:
        kw["parameters"] = dict(params) if isinstance(params, dict) else {
            k: _json_value(v) for k, v in _pairs(params, "=", "--parameter").items()}
    return kw


def _json_value(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def open_cli_suspect(spec: str, options: SuspectOptions, key: Any = None) -> Any:
    """Open ``spec`` with the options; the key's shape and class count are an HTTP suspect's defaults."""
    from ..suspects.local import open_suspect

    kw = options.merged()
    if not spec.lower().startswith(("http://", "https://")):
        extra = sorted(set(kw) - {"num_classes", "input_shape"})
        if extra:
            raise ConfigError(f"{', '.join('--' + e.replace('_', '-') for e in extra)} only apply to http(s):// "
                              f"suspects, not {spec}")
        return open_suspect(spec, **kw)
    if key is not None:
        kw.setdefault("default_num_classes", int(key.num_classes))
        kw.setdefault("default_input_shape", tuple(int(s) for s in key.input_shape))
    suspect = open_suspect(spec, **kw)
    for note in getattr(suspect, "notes", []):
        typer.echo(f"note: {note}", err=True)
    return suspect

