"""What every command shares: user-error handling, JSON or human output, dataset options.

:func:`dataset_from_model` makes a model file's own dataset and image size the default of a command that
takes ``--model`` (a mismatch with ``--dataset`` is a one-line error unless ``--force-dataset``), and
``MODELPROOF_DATA`` the default data folder.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..util.errors import ConfigError, ModelFileError, ModelproofError

F = TypeVar("F", bound=Callable[..., Any])

DatasetOpt = Annotated[str | None, typer.Option("--dataset", "-d", help="digits (bundled), mnist, fashion-mnist, cifar10, "
                                                "cifar100, npz, folder; default: the --model file's own, else digits")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Folder holding the dataset's files (not needed for "
                                                 "digits); default: $MODELPROOF_DATA/DATASET, else $MODELPROOF_DATA.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="torch intra-op threads (default: OMP_NUM_THREADS, "
                                               "else half the CPUs, 1 to 4).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu (default), cuda, mps, or auto (cuda when available).")]
ForceDatasetOpt = Annotated[bool, typer.Option("--force-dataset", help="Use --dataset even where the model file "
                                               "records another dataset.")]
SizeOpt = Annotated[int | None, typer.Option("--size", help="Resize images to SIZE x SIZE.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for splits, initialisation and training.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing --out of another kind.")]


# The papers the commands implement, as their help texts cite them (see docs/methods/).
PAPERS = {
    "Li et al.": "Li et al., ACSAC 2019, How to Prove Your Model Belongs to You: A Blind-Watermark based Framework",
    "Le Merrer et al.": "Le Merrer et al., NCA 2020, Adversarial Frontier Stitching for Remote Neural Network "
                        "Watermarking",
    "Cao et al.": "Cao et al., AsiaCCS 2021, IPGuard: Fingerprinting the Classification Boundary",
    "Zhong et al.": "Zhong et al., PAKDD 2020, Watermarking: A New Label Helps",
    "Ray et al.": "Ray et al., Deep Neural Network Piration without Accuracy Loss",
}


def cite(text: str) -> str:
    """``text`` with a known paper's "X et al." written out as "X et al. (venue, title)"."""
    for short, full in PAPERS.items():
        if short in text and full not in text:
            return text.replace(short, f"{short} ({full[len(short):].lstrip(', ')})", 1)
    return text


def short_help(text: str) -> str:
    """The first sentence of ``text`` for a command listing ("et al." and "e.g." do not end it)."""
    cut = 0
    while True:
        cut = text.find(". ", cut + 1)
        if cut < 0:
            return text.strip().splitlines()[0] if text.strip() else ""
        if not text[:cut].endswith((" al", "e.g", "i.e", "Fig", " cf")):
            return text[:cut + 1]


def user_errors(fn: F | None = None, *, progress: bool = True) -> Any:
    """Turn a ModelproofError into one line on stderr and exit status 2 (no traceback).

    The line names options as they are typed (``--key-size``, not the library's ``key_size``); with
    ``--json`` it is ``{"error": "..."}`` on stdout instead, so that a script reading JSON gets JSON.

    The command runs inside the one progress line (:func:`modelproof.util.progress.task`, on a terminal only,
    never with ``--quiet``); ``progress=False`` for commands that own the terminal (``serve``).
    """
    if fn is None:
        return functools.partial(user_errors, progress=progress)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..util.progress import task

        try:
            if not progress:
                return fn(*args, **kwargs)
            quiet = bool(kwargs.get("quiet", False)) or QUIET[0]
            with task(_command_path(), quiet=quiet):
                return fn(*args, **kwargs)
        except ModelproofError as exc:
            from ..util.redact import redact_urls

            message = option_names(redact_urls(str(exc)), kwargs)
            if kwargs.get("json_out"):
                sys.stdout.write(json.dumps({"error": message}) + "\n")
            else:
                typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None
        except Exception as exc:  # a bug or exhaustion (RecursionError, MemoryError): never read as a decision
            if type(exc).__module__.split(".")[0] in ("click", "typer") or os.environ.get("MODELPROOF_TRACEBACK"):
                raise
            from ..util.redact import redact, redact_urls

            said = redact(redact_urls(str(exc)))[:200]
            typer.echo(f"error: internal error, not a decision ({type(exc).__name__}: {said}); "
                       f"exit status {INTERNAL_ERROR}; set MODELPROOF_TRACEBACK=1 for the traceback", err=True)
            raise typer.Exit(INTERNAL_ERROR) from None

    return wrapper


INTERNAL_ERROR = 4  # exit status of a failure that is neither a decision nor a user error


QUIET = [False]  # set by the top-level ``modelproof --quiet``


def option_names(message: str, params: dict) -> str:
    """``message`` with each of the command's multi-word parameter names (``key_size``) written as its option
    (``--key-size``); single words are left alone (they are ordinary words in a sentence too)."""
    import re

    for name in sorted((p for p in params if "_" in p and p != "json_out"), key=len, reverse=True):
        message = re.sub(rf"(?<![\w-]){re.escape(name)}(?!\w)", "--" + name.replace("_", "-"), message)
    return message


def _command_path() -> str:
    """``modelproof GROUP COMMAND`` as typed (the words before the first option), for the progress line."""
    words = []
    for arg in sys.argv[1:3]:
        if arg.startswith("-"):
            break
        words.append(arg)
    return " ".join(["modelproof", *words])


def emit(result: dict, as_json: bool, lines: list[str]) -> None:
    """Print ``result`` as JSON, or the human-readable ``lines``."""
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    else:
        for line in lines:
            typer.echo(line)


def refuse_on_argv(safe: str) -> Callable[..., Any]:
    """A typer option callback: a secret typed on the command line is refused, naming the ``safe`` ways.

    The command line is visible to every user of the machine (``ps``) and kept in shell history; the
    same option read from its environment variable is accepted.
    """
    def check(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        source = ctx.get_parameter_source(str(param.name))
        if value is not None and getattr(source, "name", "") == "COMMANDLINE":
            flag = param.opts[0] if getattr(param, "opts", None) else str(param.name)
            raise typer.BadParameter(f"{flag} on the command line is visible to every user of this machine (ps) and "
                                     f"kept in shell history; use {safe}", param_hint=flag)
        return value

    return check


PASSPHRASE_WAYS = "--passphrase-file FILE, the environment variable MODELPROOF_PASSPHRASE, or the prompt on a terminal"
PassOpt = Annotated[str | None, typer.Option("--passphrase", envvar="MODELPROOF_PASSPHRASE", hidden=True,
                                             callback=refuse_on_argv(PASSPHRASE_WAYS),
                                             help="Refused on the command line: " + PASSPHRASE_WAYS + ".")]
PassFileOpt = Annotated[Path | None, typer.Option("--passphrase-file", help="Read the key's passphrase from this file "
                                                  "(first line); or set MODELPROOF_PASSPHRASE; asked for on a "
                                                  "terminal.")]


def read_secret_file(path: Path, what: str) -> str:
    """The first line of ``path`` (a passphrase or secret file); ConfigError when unreadable or empty."""
    try:
        text = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text or not text[0]:
        raise ConfigError(f"the {what} file {path} is empty")
    return text[0]


def key_passphrase(path: Path, passphrase: str | None, passphrase_file: Path | None) -> str | None:
    """The passphrase for the key at ``path``: given, read from a file, or asked for on a terminal.

    Nothing is asked for a plain key; an encrypted one without a passphrase and no terminal is left
    to ``load_key``, whose error says to pass one.
    """
    from ..keys.container import is_encrypted

    passphrase = read_passphrase(passphrase, passphrase_file)
    if passphrase is None and Path(path).is_file() and is_encrypted(path) and sys.stdin.isatty():
        passphrase = typer.prompt(f"passphrase of {path}", hide_input=True)
    return passphrase


def read_passphrase(passphrase: str | None, passphrase_file: Path | None) -> str | None:
    """The passphrase from the option/environment, or the first line of ``passphrase_file``."""
    if passphrase_file is None:
        return passphrase
    if passphrase is not None:
        raise ConfigError("give either MODELPROOF_PASSPHRASE or --passphrase-file, not both")
    return read_secret_file(passphrase_file, "passphrase")


def data_folder(dataset: str, data_dir: Path | None) -> Path | None:
    """``data_dir``, else ``$MODELPROOF_DATA/<dataset>`` when that folder exists, else ``$MODELPROOF_DATA``."""
    if data_dir is not None or dataset == "digits" or not os.environ.get("MODELPROOF_DATA"):
        return data_dir
    root = Path(os.environ["MODELPROOF_DATA"])
    return root / dataset if (root / dataset).is_dir() else root


def resolve_dataset(model: Path | None, dataset: str | None, data_dir: Path | None, size: int | None,
                    force: bool = False) -> tuple[str, Path | None, int | None]:
    """(dataset, data folder, size) for a command: the model file's record by default, digits without one."""
    recorded, recorded_size = "", None
    if model is not None and not Path(model).exists():  # before torch is imported: answers at once
        raise ModelFileError(f"model file not found: {model}")
    if model is not None and Path(model).suffix.lower() == ".safetensors":
        from ..models.modelfile import read_model_file

        record, _ = read_model_file(model)
        recorded = record.dataset
        recorded_size = record.extra.get("size") or record.input_shape[-1]
    if dataset is not None and recorded and dataset != recorded and not force:
        raise ConfigError(f"{model} was trained on {recorded!r}, not {dataset!r}: omit --dataset to use "
                          f"{recorded}, or pass --force-dataset")
    name = dataset or recorded or "digits"
    if size is None and recorded and name == recorded:
        size = int(recorded_size) if recorded_size else None
    return name, data_folder(name, data_dir), size


def with_options(wrapper: Callable[..., Any], fn: Callable[..., Any], extra: list[inspect.Parameter],
                 drop: tuple[str, ...] = ()) -> Any:
    """``wrapper`` (of ``fn``) presented to typer with ``fn``'s options, less ``drop``, plus ``extra``."""
    sig = inspect.signature(fn, eval_str=True)
    params = sorted([p for n, p in sig.parameters.items() if n not in drop] + extra, key=lambda p: p.kind)
    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def dataset_from_model(fn: F) -> F:
    """Give command ``fn`` a ``--force-dataset`` flag and resolve its dataset, data_dir and size (see above)."""
    sig = inspect.signature(fn, eval_str=True)
    force = inspect.Parameter("force_dataset", inspect.Parameter.KEYWORD_ONLY, default=False,
                              annotation=ForceDatasetOpt)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind_partial(*args, **{k: v for k, v in kwargs.items() if k != "force_dataset"})
        values = bound.arguments
        values["dataset"], values["data_dir"], values["size"] = resolve_dataset(
            values.get("model"), values.get("dataset"), values.get("data_dir"), values.get("size"),
            bool(kwargs.get("force_dataset", False)))
        return fn(**values)

    # train and data info take no --model: they only get the MODELPROOF_DATA default
    return with_options(wrapper, fn, [force] if "model" in sig.parameters else [])


def compute_options(fn: F) -> F:
    """Give command ``fn`` ``--threads`` and ``--device`` (see :mod:`modelproof.models.devices`), applied before it runs.

    Every command runs on any device: models are placed on the chosen one, library code moves data to
    its model's device in batches and returns keys, answers and results on the CPU.
    """
    extra = [inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ThreadsOpt),
             inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, default="cpu", annotation=DeviceOpt)]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..models.devices import configure

        configure(kwargs.pop("device", "cpu"), kwargs.pop("threads", None))
        return fn(*args, **kwargs)

    return with_options(wrapper, fn, extra)
