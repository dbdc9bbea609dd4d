"""Many processes through ``torch.distributed`` (launched with ``torchrun``): images sharded across ranks
(``afdps restore``), or the particles of one image spread across ranks (:class:`ParticleGroup`).

Particle-parallel runs give exactly the particles of a one-process run with the same seed: rank ``r`` of
``R`` holds global particles ``r N / R .. (r + 1) N / R - 1`` of every image, and every random number is
drawn from the Philox counter of the *global* particle index (``row0`` of the kernels). Resampling
all-gathers the ``B x N`` log-weights, every rank computes the same ancestors from the shared resampling
key, and the rows that move are exchanged with one ``all_to_all``. With an analytic prior the results are
bit-identical to one process (tests/test_distributed.py, gloo, 2 and 3 processes); a network prior may
differ in the last bits where its batch size changes its arithmetic.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import secrets
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = ["env_world", "init_from_env", "ParticleGroup", "shard", "check_agree", "check_shared_folder"]


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``(0, 1, 0)`` without it)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_from_env(device: torch.device | None = None, timeout: datetime.timedelta = datetime.timedelta(hours=24)):
    """Join the process group torchrun describes (NCCL for CUDA devices, gloo otherwise); returns ``(rank,
    world_size)``, also for one process (``torchrun --nproc-per-node 1``: a group of one, so that code written for
    many ranks, a :class:`ParticleGroup` say, runs unchanged). A no-op returning ``(0, 1)`` outside torchrun. ``timeout``: how long a collective may wait
    (24 hours by default, not torch's 10-30 minutes: in a sharded restore a rank that finishes its images waits
    at the final barrier for the slowest rank's last image, which can take longer)."""
    rank, world, _ = env_world()
    launched = "MASTER_ADDR" in os.environ and "WORLD_SIZE" in os.environ  # (torchrun's; a world of one too)
    if (world > 1 or launched) and not dist.is_initialized():
        backend = "nccl" if device is not None and torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timeout)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (rank, world)


def shard(items: list, rank: int, world: int) -> list:
    """Rank ``rank``'s share of ``items``: every ``world``-th from position ``rank``."""
    if not (0 <= rank < world):
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    return list(items[rank::world])


def _code(value) -> int:
    """A 64-bit digest of ``value``: a tensor's dtype, shape and bytes, anything else's ``repr``."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        data = f"{t.dtype} {tuple(t.shape)} ".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes()
    else:
        data = repr(value).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little", signed=True)


def check_agree(fields: dict, what: str, device=None, group=None) -> None:
    """Raise ``ValueError`` on every rank of ``group`` (the default group: every process) alike where the ranks'
    ``fields`` differ (compared by digest: one ``all_gather`` of 8 bytes a field). Ranks given different images or
    settings would otherwise restore some images twice and others never, or exchange particles of different
    problems. ``device``: where the collective runs (NCCL gathers only CUDA tensors). A no-op in one process.
    Every rank must pass the same keys."""
    if not dist.is_initialized() or dist.get_world_size(group) == 1:
        return
    names = sorted(fields)
    codes = torch.tensor([_code(fields[k]) for k in names], dtype=torch.int64, device=device)
    parts = [torch.empty_like(codes) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, codes, group=group)
    table = torch.stack(parts).cpu()
    differ = [k for i, k in enumerate(names) if bool((table[:, i] != table[0, i]).any())]
    if differ:
        ranks = [r for r in range(table.shape[0]) if bool((table[r] != table[0]).any())]
        raise ValueError(f"{what}: rank(s) {ranks} of {table.shape[0]} were given other {', '.join(differ)} than rank 0; "
                         "every rank must run the same command on the same files")


PROBE_PREFIX = ".afdps-shared-probe-"


def check_shared_folder(folder, what: str, device=None, group=None) -> None:
    """Raise ``ValueError`` on every rank of ``group`` alike unless ``folder`` is one folder that every rank sees
    (a shared filesystem, not each machine's own disk). Rank 0 creates a file of a random name there, every rank
    looks for it, and the answers are all-gathered (to the host) before rank 0 removes it. A sharded restore into
    a node-local folder would scatter its outputs and journals over the machines, and rank 0's index would list
    only its own images. A no-op in one process; every rank must call it."""
    if not dist.is_initialized() or dist.get_world_size(group) == 1:
        return
    rank = dist.get_rank(group)
    probe, made = None, 0
    if rank == 0:  # made before the token goes out: a rank that has the token looks for a file that exists
        token = secrets.randbits(62)
        probe = Path(folder) / f"{PROBE_PREFIX}{token:016x}"
        try:
            probe.touch(exist_ok=False)
            made = 1
        except OSError:  # every rank hears of it (raising here alone would leave the others in the broadcast)
            pass
    sent = torch.tensor([token if rank == 0 else 0, made], dtype=torch.int64, device=device)
    try:
        dist.broadcast(sent, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
        token, made = (int(v) for v in sent.cpu())
        if not made:
            raise ValueError(f"{what}: rank 0 cannot create a file in {str(folder)!r}")
        try:
            seen = int((Path(folder) / f"{PROBE_PREFIX}{token:016x}").exists())
        except OSError:
            seen = 0
        parts = [torch.empty(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, torch.tensor([seen], dtype=torch.int64, device=device), group=group)
        parts = torch.cat(parts).cpu().tolist()  # (on the host: with NCCL the gather is done only then, and every
        # rank has looked before rank 0 removes the file)
    finally:
        if probe is not None and made:
            probe.unlink(missing_ok=True)
    blind = [r for r, p in enumerate(parts) if not p]
    if blind:
        raise ValueError(f"{what}: rank(s) {blind} of {len(parts)} do not see the file rank 0 wrote in "
                         f"{str(folder)!r}: it is not one folder that every rank shares (each machine's own disk?); "
                         "give a folder on a filesystem every machine mounts")


class ParticleGroup:
    """The ranks of a process group sharing each image's particles (pass to ``sample(...,
    particle_group=)``); every rank calls ``sample`` with the same arguments."""

    def __init__(self, group=None):
        if not dist.is_initialized():
            raise RuntimeError("ParticleGroup needs torch.distributed to be initialised: launch with torchrun and "
                               "call afdps.distributed.init_from_env() first")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    def split(self, num_particles: int) -> tuple[int, int]:
        """``(local particles, global index of the first)`` of this rank."""
        if num_particles % self.world:
            raise ValueError(f"num_particles={num_particles} must be a multiple of the {self.world} ranks that share "
                             "each image's particles")
        n = num_particles // self.world
        return n, self.rank * n

    def all_gather(self, t: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Every rank's ``t`` concatenated in rank order along ``dim`` (the particle dim)."""
        t = t.contiguous()
        wire = t.to(torch.int32) if t.dtype in (torch.bool, torch.int8) else t
        parts = [torch.empty_like(wire) for _ in range(self.world)]
        dist.all_gather(parts, wire, group=self.group)
        return torch.cat(parts, dim=dim).to(t.dtype)

    def exchange(self, x: torch.Tensor, ancestors: torch.Tensor) -> torch.Tensor:
        """The local rows after resampling: slot ``s`` of the global ensemble takes particle ``ancestors[b,
        s]``. ``x (B, n, ...)`` this rank's rows, ``ancestors (B, N)`` global (the same on every rank). Only
        rows that move travel, in one ``all_to_all`` ordered by (destination, image, slot); ``x`` is updated in
        place (a contiguous copy first if it is not) and returned."""
        B, n = x.shape[:2]
        N = ancestors.shape[1]
        row0 = self.rank * n
        slots = torch.arange(N, device=ancestors.device).expand(B, N)
        b_idx, s_idx = (ancestors != slots).nonzero(as_tuple=True)
        a_idx = ancestors[b_idx, s_idx]
        dest, src = s_idx // n, a_idx // n
        send = (src == self.rank).nonzero().squeeze(1)
        send = send[torch.argsort(dest[send], stable=True)]
        recv = (dest == self.rank).nonzero().squeeze(1)
        recv = recv[torch.argsort(src[recv], stable=True)]
        if b_idx.numel() == 0:  # nothing moves anywhere (the ancestors are the same on every rank)
            return x
        x = x.contiguous()  # so that rows is a view and the writes below land in x
        rows = x.view(B, n, -1)
        send_rows = rows[b_idx[send], a_idx[send] - row0].contiguous()  # a copy: read before any write
        send_counts = torch.bincount(dest[send], minlength=self.world).tolist()
        recv_counts = torch.bincount(src[recv], minlength=self.world).tolist()
        recv_rows = torch.empty(len(recv), rows.shape[-1], dtype=rows.dtype, device=rows.device)
        dist.all_to_all_single(recv_rows, send_rows, recv_counts, send_counts, group=self.group)
        rows[b_idx[recv], s_idx[recv] - row0] = recv_rows  # in place, as the one-process gather_rows
        return x
