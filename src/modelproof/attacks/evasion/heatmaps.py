"""Heatmaps that explain a model's own prediction (Ray et al. §IV-B): Grad-CAM, or a saliency fallback.

Grad-CAM (Selvaraju et al.) through captum's ``LayerGradCam`` on the model's last ``nn.Conv2d``,
explained for the label the model itself predicts, with the ReLU of the original method (the
public implementation Ray et al. used, jacobgil/pytorch-grad-cam, applies it too), bilinearly
upsampled to the input's height and width and min-max normalised per image to [0, 1] (as
pytorch-grad-cam's ``scale_cam_image``). Models without a convolution (the zoo's MLP and IRNN)
have no feature map to weight: for them the fallback is input x gradient saliency (captum's
``InputXGradient``), absolute value summed over channels, normalised the same way. A
:class:`HeatmapExplainer` says which one it uses (``method``) and on which layer.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ...models.devices import model_device

GRADCAM, SALIENCY = "grad-cam", "input-x-gradient"


def last_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """Name and module of the last ``nn.Conv2d`` in registration order, or None without one."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return found[-1] if found else None


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each map min-max scaled to [0, 1]; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    out = torch.where(span > 0, (flat - low) / span.clamp(min=1e-12), torch.zeros_like(flat))
    return out.view_as(maps)


class HeatmapExplainer:
    """Heatmaps [N, 1, H, W] in [0, 1] of a model's predictions; ``method`` says Grad-CAM or the fallback.

    The explainer works on its own copy of the model (or, with ``share``, on ``model`` itself, as
    the pirated model does with its private copy) with in-place activations turned off and
    parameters frozen: captum's hooks need the convolution's output unmodified.
    """

    def __init__(self, model: nn.Module, *, share: bool = False) -> None:
        from captum.attr import InputXGradient, LayerGradCam

        self.model = (model if share else copy.deepcopy(model)).eval()
        for module in self.model.modules():
            if hasattr(module, "inplace"):
                module.inplace = False
        for p in self.model.parameters():
            p.requires_grad_(False)
        conv = last_conv(self.model)
        self.method = GRADCAM if conv is not None else SALIENCY
        self.layer = conv[0] if conv is not None else ""
        self._attr = LayerGradCam(self.model, conv[1]) if conv is not None else InputXGradient(self.model)

    def describe(self) -> dict:
        """``{"method": ..., "layer": ...}`` for reports and the saved record."""
        return {"method": self.method, "layer": self.layer}

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                 batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """(heatmaps, the labels explained): the model's own predictions unless ``labels`` is given."""
        maps, explained, device = [], [], model_device(self.model)  # explained there, returned beside the images
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].detach().float().to(device)
            with torch.no_grad():
                y = self.model(x).argmax(dim=1) if labels is None else labels[start:start + batch_size].to(device)
            maps.append(self._explain(x, y).to(images.device))
            explained.append(y.to(images.device))
        if not maps:
            side = tuple(images.shape[-2:])
            return torch.zeros(0, 1, *side), torch.zeros(0, dtype=torch.int64)
        return torch.cat(maps), torch.cat(explained)

    def _explain(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            if self.method == GRADCAM:
                cam = self._attr.attribute(x, target=y, relu_attributions=True).detach()
                cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
            else:
                cam = self._attr.attribute(x.clone().requires_grad_(True), target=y).detach()
                cam = cam.abs().sum(dim=1, keepdim=True)
        return normalise(cam.float())
