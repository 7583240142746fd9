"""``modelproof serve``: expose a model file over the Open Inference Protocol (KServe v2 REST)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..util.errors import ConfigError
from .common import compute_options, read_secret_file, refuse_on_argv, user_errors

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DAWN_WAYS = "--dawn-secret-file FILE or the environment variable MODELPROOF_DAWN_SECRET"


@user_errors(progress=False)
@compute_options
def serve_cmd(model: Annotated[Path, typer.Argument(help="A modelproof .safetensors model file or an .onnx file.")],
              host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default).")] = "127.0.0.1",
              port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
              name: Annotated[str | None, typer.Option(help="Model name in the URLs (default: the file stem).")] = None,
              max_batch: Annotated[int, typer.Option(help="Largest batch one request may carry.")] = 1024,
              layout: Annotated[str, typer.Option(help="Input layout expected: NCHW, NHWC, flat ([N, C*H*W]) or "
                                                  "flat-NHWC ([N, H*W*C]).")] = "NCHW",
              dtype: Annotated[str, typer.Option(help="Input datatype expected: FP32 in [0,1] or UINT8 in "
                                                 "0-255.")] = "FP32",
              labels_only: Annotated[bool, typer.Option("--labels-only", help="Answer labels [N, 1] only; the "
                                                        "metadata then gives no class count.")] = False,
              max_body: Annotated[int | None, typer.Option("--max-body", help="Largest request body in bytes, "
                                                           "enforced while reading (default: the largest batch as "
                                                           "JSON, 24 bytes per value, plus 1 MiB).")] = None,
              dawn_secret: Annotated[str | None, typer.Option("--dawn-secret", envvar="MODELPROOF_DAWN_SECRET",
                                                              hidden=True, callback=refuse_on_argv(DAWN_WAYS))] = None,
              dawn_secret_file: Annotated[Path | None, typer.Option("--dawn-secret-file", help="DAWN: answer a keyed "
                                                                    "share of the queries with a keyed wrong label "
                                                                    "(Szyller et al.); the secret is this file's first "
                                                                    "line (or MODELPROOF_DAWN_SECRET), 16+ "
                                                                    "characters.")] = None,
              dawn_rate: Annotated[float, typer.Option("--dawn-rate", help="DAWN: share of the answers altered "
                                                       "(default 0.005, the authors' reference filter).")] = 0.005,
              dawn_log: Annotated[Path | None, typer.Option("--dawn-log", help="DAWN: folder of the per-client logs "
                                                            "of altered answers (0700; files 0600: they hold "
                                                            "inputs); needed with a DAWN secret.")] = None,
              dawn_client_header: Annotated[str | None, typer.Option("--dawn-client-header", help="DAWN: take the "
                                                                     "client's identity from this header, set by an "
                                                                     "authenticating gateway (default: the remote "
                                                                     "address).")] = None) -> None:
    """Serve MODEL over HTTP: v2 health, metadata and infer endpoints, and TF-Serving's :predict."""
    try:
        from ..serving.server import create_app, listening_socket, serve
    except ImportError as exc:
        raise ConfigError(f"serving needs FastAPI and uvicorn: pip install 'modelproof[serve]' ({exc})") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must lie in [0, 65535], got {port}")
    dawn = _dawn(model, dawn_secret, dawn_secret_file, dawn_rate, dawn_log, dawn_client_header)
    sock = listening_socket(host, port)
    port = sock.getsockname()[1]  # the one chosen when --port 0
    try:
        app = create_app(model, name=name, max_batch=max_batch, layout=layout, dtype=dtype, labels_only=labels_only,
                         max_body=max_body, dawn=dawn)
    except BaseException:
        sock.close()
        raise
    served = app.state.served
    typer.echo(f"serving {model} as {served.name!r} ({served.platform}, input {served.dtype} "
               f"{['N', *served.wire_shape]} {served.layout}, {served.num_classes} classes"
               f"{', labels only' if served.labels_only else ''})")
    typer.echo(f"infer: POST http://{host}:{port}/v2/models/{served.name}/infer   "
               f"tf-serving: POST http://{host}:{port}/v1/models/{served.name}:predict")
    if dawn is not None:
        typer.echo(f"DAWN: altering {dawn.rule.rate:g} of the answers; per-client log in {dawn.log_dir} (client: "
                   f"{'header ' + repr(dawn.client_header) if dawn.client_header else 'remote address'})")
    if host not in LOOPBACK:
        typer.echo(f"note: listening on {host} exposes the model to the network", err=True)
    serve(app, sock)


def _dawn(model: Path, secret: str | None, secret_file: Path | None, rate: float, log: Path | None,
          client_header: str | None):
    """The DawnServing of the --dawn-* options, or None when no DAWN secret is given (ConfigError on a misfit)."""
    if secret_file is not None:
        if secret is not None:
            raise ConfigError("give either MODELPROOF_DAWN_SECRET or --dawn-secret-file, not both")
        secret = read_secret_file(secret_file, "DAWN secret")
    if secret is None:
        if log is not None or client_header is not None or rate != 0.005:
            raise ConfigError("--dawn-log, --dawn-rate and --dawn-client-header need a DAWN secret (" + DAWN_WAYS + ")")
        return None
    if log is None:
        raise ConfigError("a DAWN secret needs --dawn-log DIR: the altered answers are evidence only if logged")
    from ..serving.dawn import DawnServing, model_digest

    if not Path(model).is_file():
        raise ConfigError(f"model file not found: {model}")
    return DawnServing(secret, log, model=model_digest(model), rate=rate, client_header=client_header)


def register(app: typer.Typer) -> None:
    """Add ``serve``."""
    app.command("serve")(serve_cmd)
