"""The owner's blind-watermark secret: the trained encoder, the logo and the key's source images.

With them the owner regenerates the key samples (Eq. 3: x_key = e(x, l)) and makes fresh ones
from new images. The secret is written beside the key (``key.mpkey`` -> ``key.mpsecret``) as ONE
safetensors file: tensors ``encoder.<name>`` (the encoder's weights), ``logo`` (C, H, W) and
``sources`` (K, C, H, W), and one metadata entry ``modelproof_blind_secret`` with the JSON fields
(format, version, the encoder's architecture record, the digest of the key it belongs to, and the
SHA-256 of the tensors, which loading recomputes). With a passphrase the bytes are encrypted in
the same AES-256-GCM / scrypt container as the key (:func:`modelproof.keys.container.encrypt_bytes`). It
is never unpickled, never printed, and no report names its content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ....util.errors import KeyFileError
from ....keys.key import canonical_json
from ....keys.container import encrypt_bytes, read_plain, safetensors_metadata
from ....util.files import atomic_write_bytes, looks_like_pickle
from ....util.jsonsafe import loads as json_loads
from .networks import Encoder, encode

FORMAT, VERSION, META = "modelproof-blind-secret", 1, "modelproof_blind_secret"
SUFFIX = ".mpsecret"


def secret_path(key_path: str | Path) -> Path:
    """Where the secret of the key at ``key_path`` lives: the same name with suffix ``.mpsecret``."""
    return Path(key_path).with_suffix(SUFFIX)


@dataclass(frozen=True, eq=False)
class BlindSecret:
    """Encoder, logo and key sources, and the digest of the key they made."""

    encoder: Encoder
    logo: torch.Tensor
    sources: torch.Tensor
    key_digest: str

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Fresh key samples e(x, logo) for ``images`` (N, C, H, W) in [0, 1] (Eq. 3)."""
        from ....suspects.base import check_images

        return encode(self.encoder, self.logo, check_images(images, self.encoder.input_shape, "images"))

    def regenerate(self) -> torch.Tensor:
        """The key's inputs, made again from the stored sources."""
        return encode(self.encoder, self.logo, self.sources)


def _tensors(secret: BlindSecret) -> dict[str, torch.Tensor]:
    out = {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in secret.encoder.state_dict().items()}
    out.update(logo=secret.logo.detach().cpu().contiguous(), sources=secret.sources.detach().cpu().contiguous())
    return out


def _content_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(b"modelproof-blind-secret/1\n")
    for name in sorted(tensors):
        t = tensors[name]
        h.update(canonical_json([name, str(t.dtype), list(t.shape)]) + b"\n")
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_secret(secret: BlindSecret, path: str | Path, passphrase: str | None = None) -> Path:
    """Write ``secret`` atomically (encrypted when a passphrase is given)."""
    from safetensors.torch import save

    tensors = _tensors(secret)
    meta = {"format": FORMAT, "format_version": VERSION, "encoder": secret.encoder.record(),
            "key_digest": secret.key_digest, "content_digest": _content_digest(tensors)}
    data = save(tensors, metadata={META: canonical_json(meta).decode()})
    if passphrase is not None:
        data = encrypt_bytes(data, passphrase)
    path = Path(path)
    atomic_write_bytes(path, data, secret=True)  # encoder, logo and sources: the owner's only
    return path


def load_secret(path: str | Path, passphrase: str | None = None) -> BlindSecret:
    """Load and check a secret file; KeyFileError naming the problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    raw = read_plain(path, passphrase, "blind-watermark secret")
    if looks_like_pickle(raw):
        raise KeyFileError(f"{path}: looks like a pickle; modelproof never unpickles files")
    try:
        tensors = load(raw)
        meta = json_loads(safetensors_metadata(raw, str(path)).get(META, "null"))
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise KeyFileError(f"{path}: not a readable blind-watermark secret ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != VERSION:
        raise KeyFileError(f"{path}: not a modelproof blind-watermark secret (format {FORMAT} v{VERSION})")
    if _content_digest(tensors) != meta.get("content_digest"):
        raise KeyFileError(f"{path}: secret content does not match its recorded digest (file corrupted or edited)")
    if not {"logo", "sources"} <= set(tensors):
        raise KeyFileError(f"{path}: a blind-watermark secret holds the tensors 'logo' and 'sources'")
    record = meta.get("encoder") or {}
    try:
        encoder = Encoder(tuple(record["input_shape"]), int(record["width"]))
        encoder.load_state_dict({k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")})
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise KeyFileError(f"{path}: the encoder record does not match its weights ({type(exc).__name__})") from None
    encoder.eval()
    return BlindSecret(encoder, tensors["logo"], tensors["sources"], str(meta.get("key_digest", "")))
