"""``python -m features --store STORE.zarr [--cluster local|slurm] [--device cpu|gpu] [--cluster-config PATH]``."""
from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m features", description=__doc__.split("``")[0] +
                                     "Encode a store's patches into the 31 features (resumable).")
    parser.add_argument("--store", required=True, help="zarr store written by `python -m simulate`")
    parser.add_argument("--cluster", default="local", choices=("local", "slurm"), help="Dask cluster kind")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="cpu: NumPy; gpu: CuPy workers")
    parser.add_argument("--cluster-config", default=None, help="YAML for the cluster layer (cluster.open_client)")
    parser.add_argument("--n-workers", type=int, default=None, help="number of Dask workers (default: the config's)")
    args = parser.parse_args(argv)

    from cluster import open_client

    from .encode import encode_store, store_plan

    store_plan(args.store)  # bad store -> clear error before any cluster starts
    start = time.monotonic()
    with open_client(args.cluster, n_workers=args.n_workers, config_path=args.cluster_config) as client:
        summary = encode_store(args.store, client, device=args.device)
    print(f"features: {summary['encoded_shards']} shard(s) / {summary['encoded_rows']} rows encoded, "
          f"{summary['skipped_shards']} already done, of {summary['n_shards']} "
          f"in {time.monotonic() - start:.1f} s -> {args.store}/features", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
