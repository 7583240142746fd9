"""The pirate's price and success (Ray et al. §V-A3): FPR, FNR, clean accuracy and time per query.

FPR = the share of clean test inputs the detector flags; FNR = the share of key (trigger) inputs it
does not flag. The time ratio is the pirated model's wall time per query over the plain model's,
measured in one run on the same images (same batch size, interleaved, best of ``repeats``).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ...data.splits import Dataset
from ...models.devices import model_device
from ...models.training import evaluate
from .pirate import PiratedModel


def flag_rate(pirate: PiratedModel, images: torch.Tensor, batch_size: int = 256) -> float:
    """The share of ``images`` the pirate's detector flags."""
    if len(images) == 0:
        return float("nan")
    flagged = torch.cat([pirate.detect(images[i:i + batch_size])["flagged"]
                         for i in range(0, len(images), batch_size)])
    return float(flagged.float().mean())


def time_ratio(pirate: PiratedModel, plain: nn.Module, images: torch.Tensor, *, batch_size: int = 64,
               repeats: int = 3) -> dict:
    """Seconds per query of ``pirate`` and ``plain`` on ``images`` (best of ``repeats``), and their ratio."""
    def run(model: nn.Module) -> float:
        start = time.perf_counter()
        for i in range(0, len(images), batch_size):
            with torch.no_grad():
                model(images[i:i + batch_size].to(model_device(model)))
        return (time.perf_counter() - start) / max(1, len(images))

    pirate.eval()
    plain.eval()
    best_pirate, best_plain = float("inf"), float("inf")
    for _ in range(repeats):
        best_plain = min(best_plain, run(plain))
        best_pirate = min(best_pirate, run(pirate))
    return {"pirate_s_per_query": best_pirate, "plain_s_per_query": best_plain,
            "time_ratio": best_pirate / best_plain if best_plain > 0 else float("inf")}


def pirate_report(pirate: PiratedModel, stolen: nn.Module, clean: Dataset, key_inputs: torch.Tensor | None = None,
                  *, timing_images: int = 256) -> dict:
    """FPR on ``clean``, FNR on ``key_inputs`` (if given), both models' clean accuracy and the time ratio."""
    pirate.reset_answers()
    out = {"fpr": flag_rate(pirate, clean.images), "accuracy_stolen": evaluate(stolen, clean),
           "accuracy_pirate": evaluate(pirate, clean)}
    if key_inputs is not None:
        out["fnr"] = 1.0 - flag_rate(pirate, key_inputs)
    out.update(time_ratio(pirate, stolen, clean.images[:timing_images]))
    pirate.reset_answers()
    return out
