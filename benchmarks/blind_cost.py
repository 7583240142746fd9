"""The blind watermark's training cost: Algorithm 1 vs clean training of the same host, per step, in one run.

Usage: OMP_NUM_THREADS=1 python benchmarks/blind_cost.py [--data-dir ../shared/data] [--steps S] [--archs ...]

For each host, S steps of clean SGD training (batch n = 100, lr 0.1, momentum 0.9, wd 5e-4) and
S steps of Algorithm 1 (the same host step on the 100 + 20 merged images, plus the discriminator
and encoder steps on m = 20 key sources) on the same images, one thread, the two timed back to
back; a warm-up step of each is not counted. Prints one JSON line per host and the ratio
(issue 13's goal: at most 1.5x). The encoder has the same size for every host of one input
shape, so the ratio falls as the host grows: the LeNets are tiny next to it, ResNet-18 and
GoogLeNet (the paper's CIFAR hosts) are not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from modelproof.data.splits import load_splits
from modelproof.models import build_model
from modelproof.models.training import TrainConfig, fit
from modelproof.protections.watermarks.blind.joint import JointConfig, train_jointly
from modelproof.protections.watermarks.blind.logo import make_logo
from modelproof.protections.watermarks.blind.networks import build_discriminator, build_encoder, parameter_count
from modelproof.models.devices import configure

HOSTS = {"lenet1": "mnist", "lenet3": "mnist", "lenet5": "mnist", "resnet18": "cifar10", "googlenet": "cifar10"}


def clean_seconds(arch: str, data, steps: int) -> float:
    model = build_model(arch, 10, data.input_shape, seed=0)
    config = TrainConfig(epochs=1, batch_size=100, lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=5e-4)
    fit(model, data.subset(torch.arange(100)), config, seed=0)  # warm-up step
    return fit(model, data.subset(torch.arange(100 * steps)), config, seed=0).seconds


def joint_seconds(arch: str, data, steps: int) -> tuple[float, int]:
    shape = data.input_shape
    host = build_model(arch, 10, shape, seed=0)
    encoder, disc = build_encoder(shape, seed=1), build_discriminator(shape, seed=2)
    logo = make_logo(shape, text="TEST")
    sources, targets = data.images[-20 * steps:], (data.labels[-20 * steps:] + 1) % 10
    def run(steps_: int) -> float:
        return train_jointly(host, encoder, disc, logo, data.images[:100 * steps_], data.labels[:100 * steps_],
                             sources, targets, JointConfig(epochs=1), seed=0).seconds

    run(1)  # warm-up step
    return run(steps), parameter_count(encoder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--archs", nargs="+", default=list(HOSTS), choices=list(HOSTS))
    ap.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda when available)")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error(f"--steps must be at least 1, got {args.steps}")
    configure(args.device, 1)  # models are built and loaded on the device
    print(json.dumps({"threads": torch.get_num_threads(), "steps": args.steps}), flush=True)
    for arch in args.archs:
        ds = HOSTS[arch]
        print(f"timing {arch} ({2 * (args.steps + 1)} steps)...", file=sys.stderr, flush=True)
        data = load_splits(ds, Path(args.data_dir) / ds, seed=0).owner
        clean = clean_seconds(arch, data, args.steps)
        joint, encoder_params = joint_seconds(arch, data, args.steps)
        host_params = parameter_count(build_model(arch, 10, data.input_shape, seed=0))
        print(json.dumps({"host": arch, "dataset": ds, "host_parameters": host_params,
                          "encoder_parameters": encoder_params, "clean_s_per_step": round(clean / args.steps, 4),
                          "algorithm1_s_per_step": round(joint / args.steps, 4),
                          "ratio": round(joint / clean, 2)}), flush=True)


if __name__ == "__main__":
    main()
