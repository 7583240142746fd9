"""The end-to-end demo on the bundled digits: what ``modelproof demo`` runs.

At this stage it trains the Keras-style CNN on the owner split, evaluates it on the test split,
saves it as a safe model file and exports it to ONNX with a parity check. Later stages add
protection, attacks and verification to the same story.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .data import load_splits
from .modelfile import export_onnx, load_model, save_model, weights_digest
from .training import TrainConfig, evaluate, train_new

DEMO_CONFIG = TrainConfig(epochs=15, batch_size=32, lr=0.002, optimizer="adam")


def run_demo(out_dir: str | Path = "runs/demo", *, seed: int = 0, arch: str = "cnn", size: int = 8,
             quiet: bool = True, log: Callable[[str], None] = print) -> dict:
    """Train, evaluate, save and export a model on digits; returns a summary and logs each step."""
    start = time.perf_counter()
    out = Path(out_dir)
    splits = load_splits("digits", size=size, seed=seed)
    log(f"digits: {len(splits.owner)} owner / {len(splits.attacker)} attacker / {len(splits.test)} test images, "
        f"shape {splits.input_shape}")
    model, report = train_new(arch, splits.owner, DEMO_CONFIG, seed=seed, quiet=quiet)
    acc = evaluate(model, splits.test)
    log(f"trained {arch} for {report.epochs} epochs in {report.seconds:.1f} s: test accuracy {acc:.4f}")
    path = save_model(model, out / f"{arch}.safetensors", dataset="digits", extra={"split_seed": seed, "size": size})
    same = weights_digest(load_model(path)) == weights_digest(model)
    log(f"saved {path} (safetensors + JSON record); reload bit-exact: {same}")
    result = {"arch": arch, "test_accuracy": acc, "train_seconds": report.seconds, "model_file": str(path),
              "reload_bit_exact": same}
    try:
        onnx_path = export_onnx(model, out / f"{arch}.onnx")
        log(f"exported {onnx_path}; onnxruntime matches torch")
        result["onnx_file"] = str(onnx_path)
    except ImportError:
        log("onnxruntime not installed: skipped the ONNX export (pip install 'modelproof[onnx]')")
    result["seconds"] = time.perf_counter() - start
    log(f"demo finished in {result['seconds']:.1f} s")
    return result
