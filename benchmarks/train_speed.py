"""Foundation figures: the whole demo on digits (training, every protection, verification), the CNN
for one epoch on MNIST, ResNet-20 on 5,000 MNIST images.

Usage: python benchmarks/train_speed.py [--mnist ../shared/data/mnist]
Prints test accuracy, wall time and training images per second for each, measured in one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from modelproof.data.splits import load_splits
from modelproof.experiments.demo import DEMO_CONFIG, run_demo
from modelproof.models.training import TrainConfig, evaluate, train_new
from modelproof.models.devices import configure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mnist", default="../shared/data/mnist")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    configure(args.device, args.threads or torch.get_num_threads())  # models are built and loaded on the device
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        demo = run_demo(tmp, log=lambda s: None)
        rows.append((f"demo ({demo['arch']} on digits {demo['size']}x{demo['size']}, {DEMO_CONFIG.epochs} epochs, "
                     f"{len(demo['table'])} protections)", demo["test_accuracy"], time.perf_counter() - t, float("nan")))
    splits = load_splits("mnist", args.mnist, seed=0, attacker_fraction=0.3)
    model, rep = train_new("cnn", splits.owner, TrainConfig(epochs=1, batch_size=128, lr=0.001), seed=0)
    rows.append((f"cnn, MNIST owner split ({len(splits.owner)} images), 1 epoch", evaluate(model, splits.test),
                 rep.seconds, rep.images_per_second))
    subset = splits.owner.subset(range(5000))
    model, rep = train_new("resnet20", subset, TrainConfig(epochs=1, batch_size=128, lr=0.001), seed=0)
    rows.append(("resnet20, 5,000 MNIST images, 1 epoch", evaluate(model, splits.test), rep.seconds, rep.images_per_second))
    print(f"{'run':<58} {'test acc':>8} {'seconds':>8} {'img/s':>8}")
    for name, acc, sec, ips in rows:
        print(f"{name:<58} {acc:8.4f} {sec:8.1f} {ips:8.0f}")


if __name__ == "__main__":
    main()
