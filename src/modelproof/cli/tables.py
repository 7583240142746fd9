"""The command tables of ``attack`` and ``protect`` without torch: names, descriptions, defaults.

The attack and forgery commands are made from :data:`ATTACK_HELP` and :data:`FORGERY_HELP`, and the
protect commands take their defaults from here, so that ``--help`` and argument errors answer without
importing torch (the registries' modules import it). ``tests/cli/test_cli_startup.py`` checks every
entry against the registries (``attacks.ATTACKS``, ``attacks.forgery.FORGERIES``) and the library's
defaults, so a table cannot drift from what runs.
"""

from __future__ import annotations

# attack name -> its description (``Attack.description``), in the registry's order
ATTACK_HELP: dict[str, str] = {
    "ftll": "IPGuard FTLL: fine-tune only the last layer on the attacker's data; all others fixed",
    "ftal": "IPGuard FTAL: fine-tune all layers on the attacker's data",
    "rtll": "IPGuard RTLL: re-initialise the last layer, then train only it; all others fixed",
    "rtal": "IPGuard RTAL: re-initialise the last layer, then train all layers",
    "finetune-small": "blind-watermark §6.5: fine-tune all layers for many epochs on a small disjoint set (80%)",
    "prune-weights": "global magnitude pruning of conv+linear weights (rate or auto sweep), optional retraining",
    "prune-filters": "structural filter pruning (torch-pruning, L1 filters) at fraction c or auto sweep of c = "
        "1/16, 2/16, ...; smaller and faster model",
    "svd": "SVD compression: each linear/conv layer replaced by a rank-r factorisation (rate or auto)",
    "quantize": "int8 quantisation: torch dynamic int8 Linear + int8 conv weights, or weight-only int8",
    "overwrite": "frontier stitching overwriting: fine-tune on 1,000 fresh FGSM adversaries (true labels)",
    "extract": "model extraction / distillation: fresh student trained on the victim's answers (queries counted)",
    "pirate": "Ray et al.: stolen model behind per-class DCGAN detectors on Grad-CAM heatmaps; flagged queries "
        "get a random label (attacker data = the surrogate set)",
    "fine-pruning": "Liu et al. fine-pruning: prune the last conv layer's dormant channels (auto: <= 4% holdout "
        "drop), fine-tune",
    "weight-shifting": "weight shifting (SoK/WRT): conv filters shifted by 1.5x their mean filter plus noise, "
        "then fine-tuned",
    "neural-cleanse": "Neural Cleanse: reverse-engineer a trigger per label, flag outliers (MAD), unlearn it by "
        "fine-tuning",
    "label-smoothing": "label smoothing (SoK/WRT): fine-tune all layers on targets smoothed by epsilon 0.3",
    "regularization": "regularisation (SoK/WRT): 5 epochs with L2 weight decay 0.1, then fine-tuning until "
        "holdout loss stalls",
    "feature-permutation": "feature permutation (SoK): hidden units put in a random order, next layer reordered; "
        "same answers",
    "neural-laundering": "Aiken et al. laundering: Neural Cleanse triggers, reset units they excite (later "
        "layers), retrain",
    "knockoff": "Knockoff Nets: a student trained on the victim's probabilities for another distribution's images"
        " (default: photograph crops)",
    "transfer-learning": "transfer learning: the attacker's own model pretrained on another distribution, new "
        "head, fine-tuned on the victim's labels",
    "jpeg": "input preprocessing: every query JPEG-compressed (quality 95) before the stolen model",
    "smoothing": "input preprocessing: every query smoothed (Gaussian std 0.5, or mean/median 3x3 + fine-tuning)",
    "feature-squeezing": "input preprocessing: Xu et al. feature squeezing, bit depth (1 grey, 5 colour) [+ "
        "median]",
    "input-quantization": "input preprocessing: every query's values quantised to 16 levels (bin centres) first",
    "adversarial-training": "adversarial training (Madry et al.; SoK/WRT): fine-tune on fresh PGD adversaries, "
        "eps 0.01/0.1/0.25",
    "chain": "combined attack: registered attacks applied in order (default: weight-shifting; smoothing)",
}

# forgery command -> (its description, its access: white-box, queries or intercepted)
FORGERY_HELP: dict[str, tuple[str, str]] = {
    "forge-pattern-reuse": ("Li et al. 6.4: estimate the watermark pattern from intercepted key inputs (mean "
        "residue or saturated mask) and apply it to new images; target from a few queries", "intercepted"),
    "forge-difference": ("Li et al. 6.4: add intercepted key samples' differences from their nearest clean images"
        " to other images; target: the majority answer to the intercepted inputs", "intercepted"),
    "forge-adversarial": ("ambiguity (white box): targeted IGSM examples of own images, labels chosen by the "
        "counterfeiter", "white-box"),
    "forge-boundary": ("ambiguity (white box): IPGuard boundary points of the copy with the counterfeiter's own "
        "seed", "white-box"),
    "forge-boundary-blackbox": ("ambiguity (black box): bisect own image pairs to points just inside a chosen "
        "label, by queries", "queries"),
    "forge-independent-encoder": ("Li et al. Fig. 9: train an own blind watermark (same encoder architecture and "
        "logo, own data, own seed); its key is the forged key", "queries"),
}

# references.calibration.DEFAULT_REFERENCES: calibration references of the default population
DEFAULT_REFERENCES = 24
# protections.watermarks.blind.joint.LossWeights: the blind watermark's loss weights
BLIND_LOSS_WEIGHTS = {"alpha": 3.0, "beta": 5.0, "gamma": 1.0, "delta": 0.1}
