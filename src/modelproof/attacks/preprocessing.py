"""Input preprocessing in front of a stolen model: JPEG, smoothing, feature squeezing, input quantisation.

The pirate deploys the stolen model unchanged behind a transform of every query (Lukas et al.'s SoK,
"input preprocessing"; WRT's ``JPEGCompression``, ``InputSmoothing``, ``FeatureSqueezing`` and
``InputQuantization``): a trigger or boundary key input that depends on fine pixel detail may no longer
reach the model intact, while clean images still do. :class:`PreprocessedModel` is that deployment, an
``nn.Module`` answering ``model(transform(x))``; it saves as one model file (record ``arch:
preprocessed``, the transforms and the stolen model's architecture record; weights ``model.*``), which
``load_model`` hands back through the model-kind registry, so ``serve``, ``verify`` and ``open_suspect``
take it like any model file. A second preprocessing attack on a preprocessed model appends its
transform (one wrapper, transforms in order). ONNX cannot hold it (JPEG is not an ONNX operator).

Defaults are WRT's CIFAR-10 configurations (the SoK's settings): JPEG quality 95; Gaussian smoothing
std 0.5 (no fine-tuning), mean and median windows 3 with 20 epochs of fine-tuning through the filter;
input quantisation into 16 levels. Feature squeezing follows Xu et
al. (NDSS 2018): bit depth 1 for grey images (their MNIST squeezer), 5 for colour (their CIFAR-10 one;
WRT uses 4), optionally followed by their 2 x 2 median filter. ``epochs > 0`` fine-tunes the model through the
transform on the attacker's data (Adam, 1e-4), so that it learns the transformed images.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
import torch
from torch import nn

from ..data.splits import Dataset
from ..models.modelfile import ModelRecord, register_model_kind
from ..util.errors import ConfigError, ModelFileError
from .base import Attack, AttackLog, Param, check_choice, check_positive
from .transforms import apply_steps, check_step
from .tuning import labelled, set_training, train_layers
from .wrapped import inner_model, write_wrapper

PREPROCESSED_ARCH = "preprocessed"


class PreprocessedModel(nn.Module):
    """``model`` behind input transforms: answers ``model(transforms(x))``; the model itself is unchanged."""

    def __init__(self, model: nn.Module, steps: list[dict]) -> None:
        super().__init__()
        if isinstance(model, PreprocessedModel):  # one wrapper: transforms in the order they were added
            steps, model = [*model.steps, *steps], model.model
        self.model = model
        self.steps = [check_step(s) for s in steps]
        self.num_classes = getattr(model, "num_classes", None)
        self.input_shape = tuple(getattr(model, "input_shape", ()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(apply_steps(x, self.steps, straight_through=True))

    def describe(self) -> str:
        """E.g. ``jpeg quality=95 -> median size=2``."""
        return " -> ".join(" ".join([s["transform"], *(f"{k}={v}" for k, v in s.items() if k != "transform")])
                           for s in self.steps)


def save_preprocessed(wrapped: PreprocessedModel, path: str | Path, *, dataset: str = "",
                      extra: dict | None = None) -> Path:
    """Write ``wrapped`` to ``path`` (``.safetensors``), atomically."""
    return write_wrapper(wrapped, wrapped.model, path, arch=PREPROCESSED_ARCH, settings={"transforms": wrapped.steps},
                         what="a preprocessed model", no_onnx="JPEG and the filters run outside the network",
                         dataset=dataset, extra=extra)


def load_preprocessed(record: ModelRecord, state: dict[str, torch.Tensor], source: str | Path) -> PreprocessedModel:
    """Rebuild the preprocessed model of a file whose record says ``arch: preprocessed`` (weights strict)."""
    from ..models.devices import default_device

    settings, model = inner_model(record, state, source)
    try:
        wrapped = PreprocessedModel(model, list(settings["transforms"]))
    except (KeyError, TypeError, ConfigError) as exc:
        raise ModelFileError(f"{source}: the preprocessed-model record has bad transforms ({exc})") from None
    wrapped.record = dataclasses.replace(record)  # type: ignore[attr-defined]
    return wrapped.eval().to(default_device())


register_model_kind(PREPROCESSED_ARCH, load_preprocessed)

_TUNING = (
    Param("epochs", "int", "fine-tune the model through the transform for this many epochs (0: none)"),
    Param("lr", "float", "Adam learning rate of that fine-tuning"),
    Param("labels", "str", "'true' or 'victim' labels for that fine-tuning"),
)


class _Preprocessing(Attack):
    """Shared body: wrap the model behind :meth:`steps`, optionally fine-tune through them."""

    kind = "preprocessing"

    def _init_tuning(self, epochs: int, lr: float, labels: str) -> None:
        set_training(self, epochs=epochs, lr=lr, labels=labels, zero_epochs=True)

    def steps(self, input_shape: tuple[int, ...]) -> list[dict]:
        """The transform steps for images of ``input_shape`` (C, H, W)."""
        raise NotImplementedError

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        wrapped = PreprocessedModel(model, self.steps(data.input_shape))
        if self.epochs:
            train_layers(wrapped, labelled(model, data, self.labels, log), trainable=None, epochs=self.epochs,
                         lr=self.lr, batch_size=64, seed=seed)
        log.details.update(transforms=wrapped.describe(), fine_tuned_epochs=self.epochs)
        return wrapped


class JPEGCompression(_Preprocessing):
    """Answer every query on its JPEG-compressed version."""

    name = "jpeg"
    description = "input preprocessing: every query JPEG-compressed (quality 95) before the stolen model"
    PARAMS = (Param("quality", "int", "JPEG quality, 1 (worst) to 95"),) + _TUNING

    def __init__(self, quality: int = 95, epochs: int = 0, lr: float = 1e-4, labels: str = "true") -> None:
        self.quality = check_step({"transform": "jpeg", "quality": quality})["quality"]
        self._init_tuning(epochs, lr, labels)

    def steps(self, input_shape: tuple[int, ...]) -> list[dict]:
        return [{"transform": "jpeg", "quality": self.quality}]


class InputSmoothing(_Preprocessing):
    """Answer every query on a smoothed version: Gaussian, mean or median filter."""

    name = "smoothing"
    description = "input preprocessing: every query smoothed (Gaussian std 0.5, or mean/median 3x3 + fine-tuning)"
    PARAMS = (Param("filter", "str", "'gaussian', 'mean' or 'median'"),
              Param("std", "float", "Gaussian standard deviation in pixels"),
              Param("size", "int", "mean/median window side in pixels"),
              Param("epochs", "int", "fine-tune through the filter this many epochs (default, as WRT: 0 for "
                                     "gaussian, 20 for mean and median)")) + _TUNING[1:]

    def __init__(self, filter: str = "gaussian", std: float = 0.5, size: int = 3,  # noqa: A002
                 epochs: int | None = None, lr: float = 1e-4, labels: str = "true") -> None:
        self.filter = check_choice("filter", filter, ("gaussian", "mean", "median"))
        self.std = check_step({"transform": "gaussian", "std": std})["std"]
        self.size = check_step({"transform": "mean", "size": size})["size"]
        self._init_tuning((0 if self.filter == "gaussian" else 20) if epochs is None else epochs, lr, labels)

    def steps(self, input_shape: tuple[int, ...]) -> list[dict]:
        if self.filter == "gaussian":
            return [{"transform": "gaussian", "std": self.std}]
        return [{"transform": self.filter, "size": self.size}]


class FeatureSqueezing(_Preprocessing):
    """Xu et al.'s squeezers: reduce the bit depth of every query, optionally median-filter it."""

    name = "feature-squeezing"
    description = "input preprocessing: Xu et al. feature squeezing, bit depth (1 grey, 5 colour) [+ median]"
    PARAMS = (Param("bits", "str", "bits per value, 1-8, or 'auto' (1 for grey images, 5 for colour)"),
              Param("median", "int", "then a median filter of this side (Xu et al.: 2; 0: none)")) + _TUNING

    def __init__(self, bits: int | str = "auto", median: int = 0, epochs: int = 0, lr: float = 1e-4,
                 labels: str = "true") -> None:
        if isinstance(bits, str) and bits.strip().isdigit():
            bits = int(bits)
        self.bits = "auto" if bits == "auto" else check_step({"transform": "bits", "bits": bits})["bits"]
        self.median = check_positive("median", median, integer=True, allow_zero=True)
        if self.median:
            check_step({"transform": "median", "size": median})
        self._init_tuning(epochs, lr, labels)

    def steps(self, input_shape: tuple[int, ...]) -> list[dict]:
        bits = (1 if input_shape[0] == 1 else 5) if self.bits == "auto" else self.bits
        return [{"transform": "bits", "bits": bits}] + ([{"transform": "median", "size": self.median}]
                                                         if self.median else [])


class InputQuantisation(_Preprocessing):
    """Map every input value to the centre of its bin among ``levels`` equal bins of [0, 1]."""

    name = "input-quantization"
    description = "input preprocessing: every query's values quantised to 16 levels (bin centres) first"
    PARAMS = (Param("levels", "int", "number of equal bins of [0, 1], 2-256"),) + _TUNING

    def __init__(self, levels: int = 16, epochs: int = 0, lr: float = 1e-4, labels: str = "true") -> None:
        self.levels = check_step({"transform": "quantize", "levels": levels})["levels"]
        self._init_tuning(epochs, lr, labels)

    def steps(self, input_shape: tuple[int, ...]) -> list[dict]:
        return [{"transform": "quantize", "levels": self.levels}]
