"""Benchmark of the training data path: samples/s of one optimizer step fed three ways, in one run.

All variants train the same model (default: the attention model, d = 31, 3 layers) with Adam on the same
in-memory float32 features, one epoch per repeat, repeats interleaved so that load from other processes
hits them alike; the median is reported.

* ``bare step``: the model step on contiguous slices of tensors already in memory (no shuffling, no
  iterator): the upper bound for any data path.
* ``device-resident``: ``training.data.DeviceBatches`` (per-epoch permutation on the device, then
  contiguous slices): what ``FeatureDataModule`` feeds Lightning. Target on CPU: >= 90 % of the bare step.
* ``per-sample DataLoader``: a ``torch.utils.data.DataLoader`` over a map-style dataset with a per-sample
  ``__getitem__`` and the default collate (shuffle=True, num_workers=0).
* ``Lightning fit`` (with zarr): ``python -m training fit``'s path, Trainer + FeatureDataModule on a zarr
  store, train batches only (timed from the first to the last batch of each epoch after the first).

Also the data paths alone (iteration without a model step). With CUDA: the attention model at batch
409 600 on the device, the device's copy bandwidth (bytes read + written per second by a large
``clone``), and the bytes moved per sample by one training step, counted as the inputs + outputs of every
ATen kernel (``TorchDispatchMode``); ``bandwidth / bytes per sample`` is the memory-bound ceiling.

Writes ``bench/results/training-<utc date>-<host>.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contract.jsonio import json_text

from training.data import DeviceBatches  # noqa: E402
from training.models import build_model  # noqa: E402


def make_data(n: int, d: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, 5, (n,), generator=g)
    return x.to(device), y.to(device)


def make_step(architecture: str, d: int, device):
    torch.manual_seed(0)
    model = build_model(architecture, d).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(xb, yb):
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class PerSample(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def variants(x, y, batch_size, step, device, with_step=True):
    """name -> function running one epoch, returning the number of samples seen."""
    n = len(y)
    nb = (n + batch_size - 1) // batch_size
    device_batches = DeviceBatches(x, y, batch_size, shuffle=True, seed=0)
    loader = torch.utils.data.DataLoader(PerSample(x, y), batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))

    def consume(xb, yb):
        if with_step:
            step(xb, yb)
        else:
            xb.sum()

    def bare():
        for b in range(nb):
            consume(x[b * batch_size : (b + 1) * batch_size], y[b * batch_size : (b + 1) * batch_size])
        return n

    def resident():
        device_batches.epoch += 1
        for xb, yb in device_batches:
            consume(xb, yb)
        return n

    def per_sample():
        for xb, yb in loader:
            consume(xb.to(device, non_blocking=True), yb.to(device, non_blocking=True))
        return n

    out = {"bare step": bare, "device-resident": resident}
    if device.type == "cpu" or not with_step:
        out["per-sample DataLoader"] = per_sample
    return out


def interleaved(fns: dict, repeats: int, device) -> dict:
    """Median samples/s of each function over ``repeats`` interleaved runs (after one warm-up run each)."""
    for fn in fns.values():
        fn()
    sync(device)
    rates = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            n = fn()
            sync(device)
            rates[name].append(n / (time.perf_counter() - t))
    return {k: {"samples_per_s": statistics.median(v), "all": v} for k, v in rates.items()}


def lightning_rate(n_rows: int, batch_size: int, epochs: int, accelerator: str) -> float | None:
    """Samples/s of train batches in a real Trainer.fit on a zarr store (None without zarr)."""
    try:
        import zarr  # noqa: F401
    except ImportError:
        return None
    import pytorch_lightning as pl

    from training.data import FeatureDataModule
    from training.module import DefectClassifier
    from training.synthetic import write_synthetic_store

    class Timer(pl.Callback):
        def __init__(self):
            self.rates = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                self.t0, self.seen = time.perf_counter(), 0
            self.seen += len(batch[1])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.t1 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.rates.append((self.seen - batch_size) / (self.t1 - self.t0))  # first batch starts the clock

    with tempfile.TemporaryDirectory() as tmp:
        store = write_synthetic_store(Path(tmp) / "s.zarr", n_rows=int(n_rows / 0.8) + 1, rows_per_shard=50000)
        timer = Timer()
        trainer = pl.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             limit_val_batches=0, callbacks=[timer], default_root_dir=tmp)
        trainer.fit(DefectClassifier("attention", 31), datamodule=FeatureDataModule(store, batch_size=batch_size))
    return statistics.median(timer.rates[1:])


def bytes_per_sample(architecture: str, d: int, batch_size: int, device) -> float:
    """Bytes read + written by all ATen kernels of one training step, divided by the batch size."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            flat = torch.utils._pytree.tree_leaves((args, kwargs, out))
            Count.total += sum(t.numel() * t.element_size() for t in flat if isinstance(t, torch.Tensor))
            return out

    x, y = make_data(batch_size, d, device)
    step = make_step(architecture, d, device)
    step(x, y)
    with Count():
        step(x, y)
    return Count.total / batch_size


def copy_bandwidth(device, n_bytes: int = 1 << 30) -> float:
    """Bytes read + written per second by ``clone`` of a large tensor on ``device``."""
    a = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    a.clone()
    sync(device)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        a.clone()
        sync(device)
        best = max(best, 2 * n_bytes / (time.perf_counter() - t))
    return best


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--architecture", default="attention")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--lightning-epochs", type=int, default=6)
    p.add_argument("--gpu-rows", type=int, default=4_096_000)
    p.add_argument("--gpu-batch", type=int, default=409_600)
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cpu = torch.device("cpu")
    result = {
        "benchmark": "training",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"host": socket.gethostname(), "platform": platform.platform(), "processor": platform.processor(),
                    "torch_threads": torch.get_num_threads()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "config": vars(a),
    }
    try:
        import pytorch_lightning

        result["versions"]["pytorch_lightning"] = pytorch_lightning.__version__
    except ImportError:
        pass
    x, y = make_data(a.rows, 31, cpu)
    step = make_step(a.architecture, 31, cpu)
    cpu_rates = interleaved(variants(x, y, a.batch, step, cpu), a.repeats, cpu)
    data_only = interleaved(variants(x, y, a.batch, step, cpu, with_step=False), a.repeats, cpu)
    bare = cpu_rates["bare step"]["samples_per_s"]
    rows = [(k, v["samples_per_s"]) for k, v in cpu_rates.items()]
    ratios = {k: r / bare for k, r in rows}
    light = lightning_rate(a.rows, a.batch, a.lightning_epochs, "cpu")
    if light is not None:
        # the fit cannot be interleaved: compare it with the bare step measured just before and after it
        bare_after = interleaved({"bare": variants(x, y, a.batch, step, cpu)["bare step"]}, a.repeats, cpu)
        bare_around = (bare + bare_after["bare"]["samples_per_s"]) / 2
        rows.append(("Lightning fit (FeatureDataModule)", light))
        ratios["Lightning fit (FeatureDataModule)"] = light / bare_around
        result["cpu_bare_step_after_lightning"] = bare_after["bare"]["samples_per_s"]
    result["cpu"] = {
        "with_step": {k: r for k, r in rows},
        "ratio_to_bare_step": ratios,
        "data_path_only": {k: v["samples_per_s"] for k, v in data_only.items()},
        "target_device_resident_ratio": 0.9,
        "bytes_per_sample": bytes_per_sample(a.architecture, 31, a.batch, cpu),
    }
    print(f"CPU, {a.architecture}, batch {a.batch}, {a.rows} rows, {torch.get_num_threads()} threads "
          f"(median of {a.repeats}):")
    print(f"  {'variant':38s} {'samples/s':>12s} {'vs bare step':>13s}")
    for k, r in rows:
        print(f"  {k:38s} {r:12.0f} {ratios[k]:13.3f}")
    print("  data path alone (no model step):")
    for k, v in data_only.items():
        print(f"  {k:38s} {v['samples_per_s']:12.0f}")

    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        xg, yg = make_data(a.gpu_rows, 31, gpu)
        stepg = make_step(a.architecture, 31, gpu)
        g_rates = interleaved(variants(xg, yg, a.gpu_batch, stepg, gpu), a.repeats, gpu)
        bw = copy_bandwidth(gpu)
        bps = bytes_per_sample(a.architecture, 31, a.gpu_batch, gpu)
        result["gpu"] = {
            "name": torch.cuda.get_device_name(0),
            "batch": a.gpu_batch,
            "with_step": {k: v["samples_per_s"] for k, v in g_rates.items()},
            "copy_bandwidth_bytes_per_s": bw,
            "bytes_per_sample": bps,
            "memory_bound_samples_per_s": bw / bps,
            "fraction_of_memory_bound": {k: v["samples_per_s"] / (bw / bps) for k, v in g_rates.items()},
            "target_samples_per_s": 20e6,
        }
        light_g = lightning_rate(a.gpu_rows, a.gpu_batch, a.lightning_epochs, "gpu")
        if light_g is not None:
            result["gpu"]["with_step"]["Lightning fit (FeatureDataModule)"] = light_g
        print(f"GPU {result['gpu']['name']}, batch {a.gpu_batch}: copy bandwidth {bw / 1e9:.0f} GB/s, "
              f"{bps:.0f} bytes/sample/step -> memory bound {bw / bps / 1e6:.1f} M samples/s")
        for k, r in result["gpu"]["with_step"].items():
            print(f"  {k:38s} {r / 1e6:9.2f} M samples/s  ({r / (bw / bps):.2f} of bound)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"training-{stamp}-{socket.gethostname()}.json"
    path.write_text(json_text(result, indent=1))
    print(f"written: {path}")
    return result


if __name__ == "__main__":
    main()
