"""``modelproof train``, ``evaluate`` and ``export-onnx``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..util.errors import ConfigError
from ..util.files import check_output

from .common import (
    DataDirOpt, DatasetOpt, ForceOpt, JsonOpt, QuietOpt, SeedOpt, SizeOpt, compute_options, dataset_from_model, emit,
    user_errors)

ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="A modelproof .safetensors model file.")]


@user_errors
@dataset_from_model
@compute_options
def train(arch: Annotated[str, typer.Option("--arch", "-a", help="Architecture from the zoo (list: `modelproof models`).")] = "cnn",
          out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the model file.")] = Path("model.safetensors"),
          dataset: DatasetOpt = None, data_dir: DataDirOpt = None, size: SizeOpt = None,
          epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
          batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
          lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.001,
          optimizer: Annotated[str, typer.Option(help="adam or sgd.")] = "adam",
          schedule: Annotated[str, typer.Option(help="none, cosine or step.")] = "none",
          augment: Annotated[bool, typer.Option(help="Random crop and flip (colour images).")] = False,
          seed: SeedOpt = 0, json_out: JsonOpt = False, quiet: QuietOpt = False, force: ForceOpt = False) -> None:
    """Train a zoo model on the owner split of a dataset and save it."""
    check_output(out, force=force)
    from ..data.splits import load_splits
    from ..models.modelfile import save_model
    from ..models.training import TrainConfig, evaluate, train_new

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                         schedule=schedule, augment=augment)
    splits = load_splits(dataset, data_dir, size=size, seed=seed)
    model, report = train_new(arch, splits.owner, config, seed=seed, quiet=quiet)
    acc = evaluate(model, splits.test)
    save_model(model, out, dataset=dataset, extra={"split_seed": seed, "size": size, "train_lr": lr})
    result = {"arch": arch, "dataset": dataset, "test_accuracy": acc, "epochs": report.epochs,
              "seconds": report.seconds, "images_per_second": report.images_per_second, "out": str(out)}
    emit(result, json_out, [f"trained {arch} on {dataset} ({len(splits.owner)} images, {report.epochs} epochs) "
                            f"in {report.seconds:.1f} s ({report.images_per_second:.0f} images/s)",
                            f"test accuracy {acc:.4f} on {len(splits.test)} images", f"wrote {out}"])


@user_errors
@dataset_from_model
@compute_options
def evaluate_cmd(model: ModelOpt, dataset: DatasetOpt = None, data_dir: DataDirOpt = None,
                 size: SizeOpt = None, seed: SeedOpt = 0, json_out: JsonOpt = False) -> None:
    """Test accuracy of a model file on a dataset's test split."""
    from ..data.splits import load_splits
    from ..models.modelfile import load_model
    from ..models.training import evaluate

    net = load_model(model)
    splits = load_splits(dataset, data_dir, size=size or net.input_shape[-1], seed=seed)
    acc = evaluate(net, splits.test)
    emit({"model": str(model), "dataset": dataset, "test_accuracy": acc, "images": len(splits.test)},
         json_out, [f"test accuracy {acc:.4f} on {len(splits.test)} images of {dataset}"])


@user_errors
def export_cmd(model: ModelOpt, out: Annotated[Path, typer.Option("--out", "-o", help="The .onnx file to write.")],
               opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17, json_out: JsonOpt = False,
               force: ForceOpt = False) -> None:
    """Export a model file to ONNX (dynamic batch) and check onnxruntime agrees with torch."""
    if Path(out).suffix.lower() != ".onnx":
        raise ConfigError(f"--out {out}: name an .onnx file (export-onnx writes ONNX)")
    check_output(out, inputs=(model,), force=force)
    from ..models.modelfile import export_onnx, load_model

    net = load_model(model)
    export_onnx(net, out, opset=opset)
    emit({"model": str(model), "onnx": str(out), "opset": opset, "parity_checked": True}, json_out,
         [f"wrote {out} (opset {opset}); onnxruntime output matches torch"])


def register(app: typer.Typer) -> None:
    """Add ``train``, ``evaluate`` and ``export-onnx``."""
    app.command("train")(train)
    app.command("evaluate")(evaluate_cmd)
    app.command("export-onnx")(export_cmd)
