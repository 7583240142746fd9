"""Test helper: the cheapest settings of every registered attack, for the tests that run them all
(tests/attacks/test_attacks.py on the CPU, tests/cli/test_cuda.py on a GPU)."""

FAST = {
    "ftll": {"epochs": 1}, "ftal": {"epochs": 1}, "rtll": {"epochs": 1}, "rtal": {"epochs": 1},
    "finetune-small": {"epochs": 1, "fraction": 0.3}, "prune-weights": {"rate": 0.3, "retrain": False},
    "prune-filters": {"rate": 0.25, "retrain": False}, "svd": {"rate": 0.5}, "quantize": {},
    "overwrite": {"n": 64, "epochs": 1}, "extract": {"epochs": 1, "queries": 64},
    "pirate": {"tau": 0.5, "epochs": 1, "width": 0.25},
    "fine-pruning": {"epochs": 1}, "weight-shifting": {"epochs": 1}, "label-smoothing": {"epochs": 1},
    "neural-cleanse": {"images": 40, "reverse_epochs": 1, "epochs": 1},
    "regularization": {"reg_epochs": 1, "max_epochs": 1}, "feature-permutation": {},
    "neural-laundering": {"images": 40, "reverse_epochs": 1, "epochs": 1}, "knockoff": {"queries": 64, "epochs": 1},
    "transfer-learning": {"pretrain_images": 64, "pretrain_epochs": 1, "epochs": 1}, "jpeg": {}, "smoothing": {},
    "feature-squeezing": {}, "input-quantization": {}, "adversarial-training": {"n": 32, "iterations": 2, "epochs": 1},
    "chain": {"steps": "weight-shifting epochs=1; smoothing"},
}
