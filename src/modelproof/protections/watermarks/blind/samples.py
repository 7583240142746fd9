"""Fresh key samples from a saved secret (Eq. 3), and the check that it regenerates its key."""

from __future__ import annotations

from pathlib import Path

import torch

from ....data.splits import load_splits
from ....util.errors import ConfigError, KeyFileError
from ....keys.container import load_key
from ....util.files import atomic_write_bytes
from ....models.modelfile import load_model
from ....models.training import predict
from .imperceptibility import imperceptibility
from .secret import load_secret, secret_path


def fresh_samples(key_path: str | Path, out: str | Path, *, passphrase: str | None = None, dataset: str = "digits",
                  data_dir: str | Path | None = None, size: int | None = None, split: str = "test",
                  count: int = 100, model: str | Path | None = None, seed: int = 0) -> dict:
    """Load key and secret, check regeneration, encode ``count`` images of ``split`` and write them to ``out``."""
    from safetensors.torch import save

    if split not in ("test", "owner"):
        raise ConfigError(f"split must be 'test' or 'owner', got {split!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"count must be a positive integer, got {count!r}")
    key = load_key(key_path, passphrase)
    if key.method != "blind":
        raise KeyFileError(f"{key_path}: a {key.method!r} key, not a blind-watermark key")
    secret = load_secret(secret_path(key_path), passphrase)
    if secret.key_digest != key.digest():
        raise KeyFileError(f"{secret_path(key_path)} belongs to another key (digest mismatch)")
    again = secret.regenerate()
    diff = float((again - key.inputs).abs().max())
    splits = load_splits(dataset, data_dir, size=size or key.input_shape[-1], seed=seed)
    data = splits.test if split == "test" else splits.owner
    if data.input_shape != tuple(key.input_shape):
        raise ConfigError(f"{dataset} images have shape {data.input_shape}, the key {tuple(key.input_shape)}")
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]
    sources, labels = data.images[pick], data.labels[pick]
    samples = secret.encode(sources)
    out = Path(out)
    atomic_write_bytes(out, save({"sources": sources.contiguous(), "samples": samples, "labels": labels.contiguous()}),
                       secret=True)  # key samples and their labels: as secret as the key
    result = {"key_size": len(key), "regenerated_exactly": diff == 0.0, "regeneration_max_diff": diff,
              "count": len(pick), "split": split, "out": str(out), **imperceptibility(sources, samples)}
    if model is not None:
        net = load_model(model)
        result.update(model=str(model), true_label_rate=float((predict(net, samples) == labels).float().mean()),
                      source_true_label_rate=float((predict(net, sources) == labels).float().mean()))
    return result
