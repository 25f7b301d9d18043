"""The engine under torchrun: 2 CPU processes (gloo) against 1 process on the same data and seed.

Why the comparison is meaningful: the model is a linear classifier (no BatchNorm, no dropout),
trained with plain SGD (no momentum, no weight decay, constant learning rate) and full global
batches (N_TRAIN is a multiple of the batch size). The engine keeps ``batch_size`` as the **global**
batch: both ranks draw the same "rr" permutation and each takes one half of every global batch,
so the mean of the two ranks' mean gradients (DDP's all-reduce average) is the single-process
gradient of the same batch. The runs can only differ by float summation order, hence the tight
tolerance. The DDP run is also interrupted after 2 epochs and resumed to 3 (all ranks load the
same ``last.pt``), and the val/test sets have odd sizes so that DistributedSampler pads them:
the gathered predictions must still hold exactly one row per image.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from medbench.errors import InputError
from medbench.train import dist

WORKER = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path

    out, result, stop, order = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rank = int(os.environ.get("RANK", "0"))
    written = []

    def audit(event, args):
        if event == "open" and args[0] is not None and isinstance(args[0], (str, os.PathLike)):
            mode = str(args[1] or "r")
            if any(c in mode for c in "wax+") and str(out) in os.path.abspath(os.fspath(args[0])):
                written.append(os.fspath(args[0]))
        elif event in ("os.rename", "os.remove"):
            target = args[1] if event == "os.rename" else args[0]
            if isinstance(target, (str, os.PathLike)) and str(out) in os.path.abspath(os.fspath(target)):
                written.append(os.fspath(target))

    sys.addaudithook(audit)
    import torch
    from torch import nn
    from medbench.train.engine import TrainConfig, fit
    from medbench.train.hooks import TrainHook

    class Interrupted(Exception):
        pass

    class Stopper(TrainHook):
        """Simulates a crash after optimizer step ``stop`` (-1: never), on every rank."""

        name = "stopper"

        def after_step(self, model, optimizer, step):
            if step == stop:
                raise Interrupted()

    def make(n, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(n, 1, 4, 4, generator=g)
        y = (x.mean(dim=(1, 2, 3)) + 0.1 * torch.randn(n, generator=g) > 0.5).long()
        return [(x[i], int(y[i]), {"uid": f"s{seed}-{i}"}) for i in range(n)]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    cfg = TrainConfig(epochs=3, batch_size=8, checkpoint_every=4, lr=0.5, optimizer="sgd", momentum=0.0, weight_decay=0.0,
                      schedule="constant", patience=None, device="cpu", amp="none", order=order,
                      progress=False, seed=0, order_options={"sketch_dim": 64} if order == "cdgrab" else {})
    try:
        res = fit(model, make(64, 1), make(21, 2), cfg, out, test_ds=make(23, 3), hooks=[Stopper()])
    except Interrupted:
        result.mkdir(parents=True, exist_ok=True)
        (result / f"rank{rank}-stopped.json").write_text(json.dumps({"written": written}))
        sys.exit(0)
    w = [p.detach().flatten().tolist() for p in res.model.parameters()]
    record = {"rank": rank, "world": int(os.environ.get("WORLD_SIZE", "1")), "written": written,
              "weights": w, "history": res.history.to_dict(orient="list"),
              "n_pred": len(res.predictions), "uids": res.predictions["uid"].tolist(),
              "probs": res.predictions["prob"].tolist()}
    result.mkdir(parents=True, exist_ok=True)
    (result / f"rank{rank}.json").write_text(json.dumps(record))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return env


def _launch(script: Path, out: Path, result: Path, stop: int = -1, order: str = "rr", nproc: int = 2) -> None:
    args = [str(script), str(out), str(result), str(stop), order]
    if nproc == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def _read(result: Path, name: str) -> dict:
    return json.loads((result / name).read_text())


@pytest.mark.slow
def test_ddp_two_ranks_match_one_process_and_resume(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    t0 = time.perf_counter()
    _launch(script, tmp_path / "single", tmp_path / "res1", nproc=1)
    # interrupted in the middle of epoch 1 (last checkpoint at step 12) ...
    _launch(script, tmp_path / "ddp", tmp_path / "res2", stop=13)
    assert (tmp_path / "res2" / "rank1-stopped.json").is_file() and not (tmp_path / "ddp" / "summary.json").exists()
    _launch(script, tmp_path / "ddp", tmp_path / "res2")  # ... and resumed by both ranks
    single = _read(tmp_path / "res1", "rank0.json")
    r0, r1 = _read(tmp_path / "res2", "rank0.json"), _read(tmp_path / "res2", "rank1.json")
    assert r0["world"] == 2 and r1["world"] == 2

    for a, b in zip(single["weights"], r0["weights"], strict=True):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)
    assert r0["weights"] == r1["weights"]  # DDP keeps the ranks in sync
    for key in ("val_loss", "train_loss", "val_auc"):
        assert single["history"][key] == pytest.approx(r0["history"][key], abs=1e-5), key
        assert r0["history"][key] == r1["history"][key], key  # gathered metrics are the same everywhere
    assert len(r0["history"]["epoch"]) == 3

    # one prediction row per val + test image despite sampler padding (21 and 23 over 2 ranks)
    assert r0["n_pred"] == 21 + 23 and len(set(r0["uids"])) == 44
    assert r0["uids"] == single["uids"]
    assert r0["probs"] == pytest.approx(single["probs"], abs=1e-5)
    preds = pd.read_parquet(tmp_path / "ddp" / "predictions.parquet")
    assert len(preds) == 44 and preds["uid"].is_unique

    # only rank 0 wrote into the run folder (both in the interrupted and in the resumed launch)
    assert r0["written"] and not r1["written"]
    assert not _read(tmp_path / "res2", "rank1-stopped.json")["written"]
    assert _read(tmp_path / "res2", "rank0-stopped.json")["written"]
    hist = pd.read_csv(tmp_path / "ddp" / "history.csv")
    assert len(hist) == 3
    assert time.perf_counter() - t0 < 600


@pytest.mark.slow
def test_ddp_cdgrab_runs_per_rank(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    _launch(script, tmp_path / "run", tmp_path / "res", order="cdgrab")
    r0, r1 = _read(tmp_path / "res", "rank0.json"), _read(tmp_path / "res", "rank1.json")
    assert r0["weights"] == r1["weights"]
    assert r0["n_pred"] == 44 and len(set(r0["uids"])) == 44
    assert not r1["written"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["sampler"]["world_size"] == 2 and summary["batch_per_rank"] == 4


def test_shard_batches_split_each_global_batch() -> None:
    order = list(range(10))
    r0 = dist.shard_batches(order, 4, 0, 2)
    r1 = dist.shard_batches(order, 4, 1, 2)
    assert r0 == [0, 1, 4, 5, 8] and r1 == [2, 3, 6, 7, 9]
    # a last batch of 1 over 2 ranks is padded from the start of the order
    assert dist.shard_batches(list(range(5)), 4, 1, 2) == [2, 3, 0]


def test_rank_shard_sampler_forwards_protocol() -> None:
    from medbench.train.hooks import ORDERINGS, load_builtin_entries

    load_builtin_entries()
    base = ORDERINGS.create("rr", dataset_size=10, seed=0)
    shards = [dist.RankShardSampler(ORDERINGS.create("rr", dataset_size=10, seed=0), 4, r, 2) for r in range(2)]
    for s in shards:
        s.set_epoch(3)
    base.set_epoch(3)
    got = sorted(list(shards[0]) + list(shards[1]))
    assert got == list(range(10)) and all(len(list(s)) == len(s) for s in shards)
    assert shards[0].state_dict()["epoch"] == 3 and not hasattr(shards[0], "observe")
    with pytest.raises(InputError, match="multiple"):
        dist.RankShardSampler(base, 5, 0, 2)


def test_grab_refused_under_ddp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from torch import nn

    from medbench.train.engine import TrainConfig, fit

    monkeypatch.setattr(dist, "world_size", lambda: 2)
    data = [(torch.rand(1, 4, 4), i % 2, {"uid": str(i)}) for i in range(8)]
    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu", order="grab", progress=False)
    with pytest.raises(InputError, match="cdgrab"):
        fit(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), data, None, cfg, tmp_path)


def test_init_from_env_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.init_from_env("cpu") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(InputError, match="torchrun"):
        dist.init_from_env("cpu")


def test_gpu_benchmark_exits_cleanly_without_cuda(tmp_path: Path) -> None:
    """benchmarks/gpu.py says there is no GPU and exits 0 (CUDA hidden from the subprocess)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"
    env = {**_env(), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(script), "--json", str(tmp_path / "r.json")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no CUDA GPU" in proc.stdout + proc.stderr
    assert not (tmp_path / "r.json").exists()
