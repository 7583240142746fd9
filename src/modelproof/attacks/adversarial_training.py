"""Adversarial training (Madry et al. 2018) as a removal attack (Lukas et al.'s SoK; WRT's ``AdversarialTraining``).

Frontier-stitching and IPGuard keys sit next to the decision boundary; training the model to be robust
around the attacker's images moves that boundary. Every epoch, for each budget eps in ``eps``, ``n``
random attacker images are turned into PGD adversaries of the current model (l-infinity, no random
start, ``iterations`` steps of size ``step``, each projected back into the eps-ball and [0, 1]),
labelled with their source image's label, and the model is fine-tuned for one pass over the attacker's
images plus those adversaries. WRT's CIFAR-10 configuration: eps 0.01, 0.1 and 0.25, step 0.01, 40
iterations, 1,000 adversaries per eps, 5 epochs; fine-tuning with Adam at the package's rate 1e-4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.splits import Dataset, concat
from ..models.devices import model_device
from ..util.errors import ConfigError
from ..util.progress import phase, report
from .base import Attack, AttackLog, Param, check_positive
from .tuning import labelled, set_training, train_layers


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, step: float, iterations: int,
        batch_size: int = 256) -> torch.Tensor:
    """l-infinity PGD without random start: ``iterations`` signed-gradient steps of ``step`` up the
    cross-entropy of ``labels``, each projected onto the eps-ball around ``images`` and onto [0, 1]."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x0 = images[start:start + batch_size].to(device)
            y = labels[start:start + batch_size].to(device)
            x = x0.clone()
            for _ in range(iterations):
                x.requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
                x = torch.min(torch.max(x.detach() + step * grad.sign(), x0 - eps), x0 + eps).clamp_(0.0, 1.0)
            out.append(x.detach().cpu())
    finally:
        for p, flag in zip(model.parameters(), frozen):
            p.requires_grad_(flag)
        model.train(was_training)
    return torch.cat(out) if out else images.clone()


class AdversarialTraining(Attack):
    """Fine-tune on fresh PGD adversaries of the attacker's images at several budgets, every epoch."""

    name = "adversarial-training"
    description = "adversarial training (Madry et al.; SoK/WRT): fine-tune on fresh PGD adversaries, eps 0.01/0.1/0.25"
    PARAMS = (
        Param("eps", "floats", "l-infinity budgets, comma-separated; n adversaries each per epoch"),
        Param("step", "float", "PGD step size"),
        Param("iterations", "int", "PGD steps"),
        Param("n", "int", "adversaries per budget per epoch (capped at the attacker's image count)"),
        Param("epochs", "int", "epochs, each with fresh adversaries"),
        Param("lr", "float", "Adam learning rate"),
        Param("batch_size", "int", "batch size"),
        Param("labels", "str", "'true' (the attacker's labels) or 'victim' (relabel by the victim's answers)"),
    )

    def __init__(self, eps: tuple[float, ...] = (0.01, 0.1, 0.25), step: float = 0.01, iterations: int = 40,
                 n: int = 1000, epochs: int = 5, lr: float = 1e-4, batch_size: int = 64, labels: str = "true") -> None:
        values = (eps,) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else eps
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or not tuple(values):
            raise ConfigError(f"eps must be a list of positive budgets, got {eps!r}")
        self.eps = tuple(float(check_positive("eps entry", e)) for e in values)  # type: ignore[union-attr]
        self.step = float(check_positive("step", step))
        self.iterations = check_positive("iterations", iterations, integer=True)
        self.n = check_positive("n", n, integer=True)
        set_training(self, epochs=epochs, lr=lr, batch_size=batch_size, labels=labels)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        data = labelled(model, data, self.labels, log)
        gen = torch.Generator().manual_seed(seed)
        count = min(self.n, len(data))
        fooled = []
        for epoch in range(self.epochs):
            phase(f"adversarial training: PGD adversaries, epoch {epoch + 1}/{self.epochs}", len(self.eps))
            parts = []
            for eps in self.eps:
                src = data.subset(torch.randperm(len(data), generator=gen)[:count])
                adv = pgd(model, src.images, src.labels, eps, self.step, self.iterations)
                parts.append(Dataset(adv, src.labels, data.class_names, f"{data.name}/pgd{eps:g}", dict(data.meta)))
                report(1, eps=eps)
            if epoch == 0:
                with torch.no_grad():
                    device = model_device(model)
                    fooled = [float((model(p.images.to(device)).argmax(1).cpu() != p.labels).float().mean())
                              for p in parts]
            train_layers(model, concat([data, *parts], name=f"{data.name}/adversarial"), trainable=None, epochs=1,
                         lr=self.lr, batch_size=self.batch_size, seed=seed + epoch)
        log.details.update(adversaries_per_epoch=count * len(self.eps), fooled_first_epoch=fooled)
        return model
