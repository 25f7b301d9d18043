"""Training throughput of ``medbench.train.engine.fit`` against a hand-written PyTorch loop.

Same model, data, batch size, optimizer and number of epochs; both without validation. The two
are run alternately (``--repeats`` times each) and the median images/s of each is compared, which
damps the noise of a shared machine.

Usage:
    python benchmarks/engine.py [--n 512] [--size 64] [--batch-size 32] [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from medbench.data.dataset import ArrayDataset
from medbench.train.engine import TrainConfig, fit


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(block(1, 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.classifier = nn.Linear(64, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x))

    return Net()


def hand_loop(ds: ArrayDataset, args: argparse.Namespace) -> tuple[float, float]:
    """The loop a user would write: shuffled DataLoader, AdamW, cross-entropy, cosine per epoch."""
    model = make_model(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True,
                        collate_fn=lambda b: (torch.stack([i[0] for i in b]), torch.tensor([i[1] for i in b])))
    loss_fn = nn.CrossEntropyLoss()
    seen, t0, c0 = 0, time.perf_counter(), time.process_time()
    for _ in range(args.epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            seen += len(y)
        sched.step()
    return seen / (time.perf_counter() - t0), seen / (time.process_time() - c0)


def engine(ds: ArrayDataset, args: argparse.Namespace) -> tuple[float, float, float]:
    """``fit`` with the same settings: images/s of its training loop (own summary), of the whole
    call (set-up, checkpoints, history and summary files included) and per CPU second of the call."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, optimizer="adamw",
                          schedule="cosine", device="cpu", progress=False, patience=None)
        t0, c0 = time.perf_counter(), time.process_time()
        res = fit(make_model(0), ds, None, cfg, tmp)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(ds) * args.epochs
    return float(res.summary["train_images_per_s"]), n / wall, n / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    ds = ArrayDataset(torch.rand(args.n, 1, args.size, args.size, generator=g),
                      torch.randint(0, 2, (args.n,), generator=g))
    hand, hand_cpu, eng, eng_wall, eng_cpu = [], [], [], [], []
    for _ in range(args.repeats):
        rate, cpu_rate = hand_loop(ds, args)
        hand.append(rate)
        hand_cpu.append(cpu_rate)
        loop_rate, wall_rate, cpu_rate = engine(ds, args)
        eng.append(loop_rate)
        eng_wall.append(wall_rate)
        eng_cpu.append(cpu_rate)
    print(f"device cpu, torch threads {torch.get_num_threads()}, n={args.n}, size={args.size}, "
          f"batch={args.batch_size}, epochs={args.epochs}, repeats={args.repeats}")
    med = statistics.median
    print(f"hand-written loop: {med(hand):8.1f} images/s (runs: {', '.join(f'{v:.1f}' for v in hand)})")
    print(f"medbench engine:   {med(eng):8.1f} images/s (runs: {', '.join(f'{v:.1f}' for v in eng)})")
    print(f"medbench fit():    {med(eng_wall):8.1f} images/s over the whole call "
          f"(runs: {', '.join(f'{v:.1f}' for v in eng_wall)})")
    print(f"engine / hand = {med(eng) / med(hand):.3f}x (training loop), "
          f"{med(eng_wall) / med(hand):.3f}x (whole fit call), medians")
    print(f"per CPU second (robust on a busy machine): hand {med(hand_cpu):.1f}, whole fit call "
          f"{med(eng_cpu):.1f} images/cpu-s -> {med(eng_cpu) / med(hand_cpu):.3f}x")


if __name__ == "__main__":
    main()
