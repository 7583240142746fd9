"""Checkpoints of long protections: what is written, and what is refused (then the run starts over)."""

from __future__ import annotations

import stat

import torch
from torch import nn

from modelproof.protections.checkpoint import (load_checkpoint, optimizer_tensors, restore_optimizer, run_tag,
                                               save_checkpoint)


def _trained_optimiser(kind):
    net = nn.Linear(3, 2)
    opt = kind(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.ones(4, 3)).sum().backward()
        opt.step()
    return net, opt


def test_a_checkpoint_round_trips_and_is_owner_only(tmp_path) -> None:
    net, opt = _trained_optimiser(lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9))
    tensors, meta = optimizer_tensors("opt", opt)
    path = tmp_path / "part" / "x.ckpt"
    save_checkpoint(path, "tag", {**tensors, "w": net.weight}, {"opt": meta, "epoch": 3}, passphrase="pw")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    got, back = load_checkpoint(path, "tag", passphrase="pw")
    assert back["epoch"] == 3 and torch.equal(got["w"], net.weight)
    fresh = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    restore_optimizer(fresh, "opt", got, back["opt"])
    for (_, a), (_, b) in zip(sorted(opt.state_dict()["state"].items()), sorted(fresh.state_dict()["state"].items())):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


def test_adam_state_survives_a_round_trip(tmp_path) -> None:
    net, opt = _trained_optimiser(lambda p, lr: torch.optim.Adam(p, lr=lr, betas=(0.5, 0.999)))
    tensors, meta = optimizer_tensors("adam", opt)
    save_checkpoint(tmp_path / "a.ckpt", "t", tensors, {"adam": meta})
    got, back = load_checkpoint(tmp_path / "a.ckpt", "t")
    fresh = torch.optim.Adam(net.parameters(), lr=0.1, betas=(0.5, 0.999))
    restore_optimizer(fresh, "adam", got, back["adam"])
    grads = [torch.ones_like(p) for p in net.parameters()]
    steps = []
    for o in (opt, fresh):  # the next step from either is the same
        before = [p.detach().clone() for p in net.parameters()]
        for p, g in zip(net.parameters(), grads):
            p.grad = g.clone()
        o.step()
        steps.append([p.detach() - b for p, b in zip(net.parameters(), before)])
        with torch.no_grad():
            for p, b in zip(net.parameters(), before):
                p.copy_(b)
    assert all(torch.equal(a, b) for a, b in zip(*steps))


def test_another_run_a_wrong_passphrase_or_a_damaged_file_start_over(tmp_path) -> None:
    path = tmp_path / "c.ckpt"
    assert load_checkpoint(path, "tag") is None  # none yet
    save_checkpoint(path, "tag", {"w": torch.zeros(2)}, {}, passphrase="right")
    assert load_checkpoint(path, "other tag", passphrase="right") is None
    assert load_checkpoint(path, "tag", passphrase="wrong") is None
    assert load_checkpoint(path, "tag") is None  # encrypted, read as plain
    save_checkpoint(path, "tag", {"w": torch.zeros(2)}, {})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    assert load_checkpoint(path, "tag") is None


def test_the_run_tag_follows_every_byte_and_shape() -> None:
    a = torch.zeros(2, 3)
    assert run_tag({"x": 1}, [a]) == run_tag({"x": 1}, [a.clone()])
    assert run_tag({"x": 1}, [a]) != run_tag({"x": 2}, [a])
    assert run_tag({"x": 1}, [a]) != run_tag({"x": 1}, [a.reshape(3, 2)])
    b = a.clone()
    b[1, 2] = 1e-30
    assert run_tag({"x": 1}, [a]) != run_tag({"x": 1}, [b])
    assert run_tag({}, [torch.tensor(5)]) != run_tag({}, [torch.tensor(6)])  # 0-dim tensors too


def test_a_checkpoint_is_due_once_a_minute_and_after_the_last_epoch(tmp_path) -> None:
    from modelproof.protections.checkpoint import SAVE_EVERY_S, Resume

    every_minute, always = Resume(tmp_path), Resume(tmp_path, every_s=0.0)
    assert SAVE_EVERY_S == 60.0
    assert not every_minute.due(59.0, last=False) and every_minute.due(60.0, last=False)
    assert every_minute.due(0.1, last=True) and always.due(0.0, last=False)


def test_a_piece_is_kept_only_when_it_took_long_enough_and_only_for_its_tag(tmp_path) -> None:
    from modelproof.protections.checkpoint import Resume, kept_piece

    computed = []

    def compute() -> dict[str, torch.Tensor]:
        computed.append(1)
        return {"points": torch.arange(6.0).reshape(2, 3), "ok": torch.tensor([True, False])}

    quick = Resume(tmp_path / "quick")  # the default: only a piece of a minute or more is worth a file
    kept_piece(quick, "part", "a" * 64, compute)
    assert not quick.folder.exists()
    every = Resume(tmp_path / "every", passphrase="pw", every_s=0.0)
    first = kept_piece(every, "part", "a" * 64, compute)
    again = kept_piece(every, "part", "a" * 64, compute)
    assert len(computed) == 2 and all(torch.equal(first[k], again[k]) for k in first)
    kept_piece(every, "part", "b" * 64, compute)  # another tag: computed, not read
    kept_piece(Resume(every.folder, passphrase="other", every_s=0.0), "part", "a" * 64, compute)  # unreadable
    assert len(computed) == 4
    assert kept_piece(None, "part", "a" * 64, compute) and len(computed) == 5
