"""Models: the zoo, its safe file format, training, and where models run.

The zoo's classifiers take [0,1] images, normalise inside, and expose ``features`` and ``head``;
``build_model(name, num_classes, input_shape, seed=...)`` builds any architecture in
``ARCHITECTURES`` deterministically and ``describe(name)`` says what it is in one line. A model file
(``save_model`` / ``load_model``) is safetensors weights plus a JSON architecture record, never a
pickle; ``export_onnx`` writes a parity-checked ONNX file. ``fit`` / ``train_new`` train, and
``evaluate``, ``predict``, ``logits`` run a model in batches on its own device.
"""

from __future__ import annotations

from .base import Normalize, ZooModel, last_linear
from .devices import DEVICES, configure, default_device, model_device, resolve_device
from .modelfile import ModelRecord, export_onnx, load_model, register_model_kind, save_model, weights_digest
from .registry import ARCHITECTURES, ArchSpec, architecture_record, build_from_record, build_model, describe
from .training import TrainConfig, TrainReport, evaluate, fit, logits, predict, train_new

__all__ = [
    "ARCHITECTURES", "ArchSpec", "DEVICES", "ModelRecord", "Normalize", "TrainConfig", "TrainReport", "ZooModel",
    "architecture_record", "build_from_record", "build_model", "configure", "default_device", "describe",
    "evaluate", "export_onnx", "fit", "last_linear", "load_model", "logits", "model_device", "predict",
    "register_model_kind", "resolve_device", "save_model", "train_new", "weights_digest",
]
