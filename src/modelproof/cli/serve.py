"""``modelproof serve``: expose a model file over the Open Inference Protocol (KServe v2 REST)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..util.errors import ConfigError
from .common import compute_options, user_errors

LOOPBACK = ("127.0.0.1", "localhost", "::1")


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
                                                           "JSON, 24 bytes per value, plus 1 MiB).")] = None) -> None:
    """Serve MODEL over HTTP: v2 health, metadata and infer endpoints, and TF-Serving's :predict."""
    try:
        from ..serving.server import create_app, listening_socket, serve
    except ImportError as exc:
        raise ConfigError(f"serving needs FastAPI and uvicorn: pip install 'modelproof[serve]' ({exc})") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must lie in [0, 65535], got {port}")
    sock = listening_socket(host, port)
    port = sock.getsockname()[1]  # the one chosen when --port 0
    try:
        app = create_app(model, name=name, max_batch=max_batch, layout=layout, dtype=dtype, labels_only=labels_only,
                         max_body=max_body)
    except BaseException:
        sock.close()
        raise
    served = app.state.served
    typer.echo(f"serving {model} as {served.name!r} ({served.platform}, input {served.dtype} "
               f"{['N', *served.wire_shape]} {served.layout}, {served.num_classes} classes"
               f"{', labels only' if served.labels_only else ''})")
    typer.echo(f"infer: POST http://{host}:{port}/v2/models/{served.name}/infer   "
               f"tf-serving: POST http://{host}:{port}/v1/models/{served.name}:predict")
    if host not in LOOPBACK:
        typer.echo(f"note: listening on {host} exposes the model to the network", err=True)
    serve(app, sock)


def register(app: typer.Typer) -> None:
    """Add ``serve``."""
    app.command("serve")(serve_cmd)
