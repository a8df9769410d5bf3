# Context-aware STEM defect classification: simulate -> features -> train -> evaluate.
# Every target creates .venv and installs what is missing itself. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_CONFIG ?= configs/dataset/demo.yaml
DEMO_STORE ?= data/demo.zarr
CLUSTER ?= local
PYTEST_ARGS ?=
# e.g. TRAIN_ARGS='--models MLP-Simple attn-4k' or '--jobs 1'; '--max-epochs N' trains N epochs instead of the
# step schedule (training/schedule.py) that small stores get by default
TRAIN_ARGS ?=
PLANEGROUPS_CONFIG ?= configs/dataset/planegroups-demo.yaml
PLANEGROUPS_STORE ?= data/planegroups-demo.zarr
# e.g. PLANEGROUPS_ARGS='--max-epochs 30'; OMP_NUM_THREADS=1 is faster on a busy shared machine
PLANEGROUPS_ARGS ?=
PAPER_SCALE_OUT ?= data/paper-scale
# e.g. RVAE_ARGS='--max-epochs 10' for a quicker rVAE demo, or '--fresh' to refit from scratch
RVAE_ARGS ?=
LABEL_PROJECT ?= data/label-demo
LABEL_PORT ?= 8000
# optional checkpoint whose classes the page shows as suggestions on request, e.g. runs/demo/mlp-deep/checkpoints/last.ckpt
LABEL_MODEL ?=

.DEFAULT_GOAL := help
HOSTS_STORE ?= data/hosts.zarr
STARTER_WORK ?= data/starter

.PHONY: help venv simulate features verify train evaluate generalise label test test-fast bench rvae-adf rvae-4dstem slurm-install browser-install slurm-up slurm-down clean \
	planegroups planegroups-kfold starter-model

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU build, so that no dependency pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# example data only (a real MoS2 HAADF .dm3 for tests/test_inference_real.py; none of its code is imported)
	$(PY) -m pip install -q --no-deps temul-toolkit==0.1.9
	touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the project and its dependencies

simulate: $(STAMP) ## Simulate the demo dataset into data/demo.zarr (CLUSTER=local|slurm, DEMO_CONFIG=...)
	$(PY) -m simulate run --config $(DEMO_CONFIG) --out $(DEMO_STORE) --cluster $(CLUSTER) --resume

features: $(STAMP) ## Encode the demo store's patches into the 31 features
	$(PY) -m features encode --store $(DEMO_STORE) --cluster $(CLUSTER)

verify: $(STAMP) ## Check every shard of the demo store (REPAIR=--repair reruns exactly what owns bad shards)
	$(PY) -m simulate verify $(DEMO_STORE) --cluster $(CLUSTER) $(REPAIR)
	$(PY) -m features verify --store $(DEMO_STORE) --cluster $(CLUSTER) $(REPAIR)

train: $(STAMP) features ## Train + evaluate the six models on the demo store (CPU, 2 at a time; logs in runs/demo/*/train.log)
	$(PY) -m training demo --store $(DEMO_STORE) --out runs/demo $(TRAIN_ARGS)

evaluate: $(STAMP) ## Print the demo's Table 1 (paper layout + each model's schedule) from runs/demo
	$(PY) -m training demo-table --runs runs/demo

generalise: $(STAMP) ## Held-out hosts and dopants: simulate configs/dataset/hosts.yaml (~35 min on 2 cores), encode, both context encodings
	$(PY) -m simulate run --config configs/dataset/hosts.yaml --out $(HOSTS_STORE) --cluster $(CLUSTER) --resume
	$(PY) -m features encode --store $(HOSTS_STORE) --cluster $(CLUSTER)
	$(PY) bench/column_contrast.py --store $(HOSTS_STORE)
	$(PY) bench/generalise.py --store $(HOSTS_STORE)

starter-model: $(STAMP) ## Simulate configs/dataset/starter.yaml (~1 h on 2 cores, resumable), train, ship it in inference/models/
	nice -n 10 $(PY) -m inference build --config configs/dataset/starter.yaml --name starter --work $(STARTER_WORK) \
		--into inference/models --keep-data --cluster $(CLUSTER)

planegroups: $(STAMP) ## Simulate the demo plane-group store + symmetry maps, train both phase arms (runs/planegroups/)
	$(PY) -m simulate planegroups --config $(PLANEGROUPS_CONFIG) --out $(PLANEGROUPS_STORE) --cluster $(CLUSTER) --resume
	$(PY) -m features symmetry --store $(PLANEGROUPS_STORE) --cluster $(CLUSTER)
	$(PY) -m training phase demo --store $(PLANEGROUPS_STORE) --out runs/planegroups $(PLANEGROUPS_ARGS)

planegroups-kfold: $(STAMP) planegroups ## Both arms x 3 seeds x 3 folds by structure + real materials (long); bench/results/
	$(PY) -m simulate planegroups-materials --out data/planegroups-materials
	$(PY) bench/planegroups.py --store $(PLANEGROUPS_STORE) --runs runs/planegroups/kfold --materials data/planegroups-materials

label: $(STAMP) ## Label columns in the browser on a demo field (simulated once, ~20 s; LABEL_PORT=8000, LABEL_MODEL=CKPT)
	$(PY) -m labelling demo --project $(LABEL_PROJECT) $(if $(LABEL_MODEL),--model $(LABEL_MODEL))
	$(PY) -m labelling serve --project $(LABEL_PROJECT) --port $(LABEL_PORT)

rvae-adf: $(STAMP) ## rVAE on ADF (seed 002): render a two-grain field, fit-image, score vs truth and PCA -> bench/results/
	$(PY) bench/rvae_adf.py $(RVAE_ARGS)

rvae-4dstem: $(STAMP) ## rVAE on 4D-STEM (seed 004): simulate once into data/fourdstem.zarr, fit per dose, COM baseline, defect AUCs -> bench/results/
	$(PY) bench/rvae_4dstem.py $(RVAE_ARGS)

paper-scale: $(STAMP) ## Rehearse the paper config's 54.8 M-row store + one attn-400k epoch on this machine (~1 h on 2 cores, ~8 GB in PAPER_SCALE_OUT) -> bench/results/
	$(PY) bench/paper_scale.py --out $(PAPER_SCALE_OUT)

slurm-install: ## Install Debian's Slurm + munge packages if missing (needs root)
	bash slurm/install-debian-slurm.sh

browser-install: ## Install Debian's Chromium + chromedriver if missing (the labelling page's browser tests; needs root)
	if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; fi

slurm-up: slurm-install ## Start a single-node Slurm on localhost (idempotent)
	bash slurm/start-local-slurm.sh

slurm-down: ## Stop the single-node Slurm
	bash slurm/stop-local-slurm.sh

test: $(STAMP) slurm-install browser-install ## Run the whole test suite, real-Slurm and headless-Chromium tests included
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the tests that need neither Slurm nor long simulations
	$(PY) -m pytest -m "not slurm and not slow" $(PYTEST_ARGS)

bench: $(STAMP) ## Run the benchmarks (installs motif-learn for the comparison); results go to bench/results/
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/simulate.py
	$(PY) bench/slicing.py
	$(PY) bench/features.py
	$(PY) bench/symmetry.py
	$(PY) bench/training.py
	if [ -f runs/demo/mlp-deep/checkpoints/last.ckpt ]; then $(PY) bench/inference.py; else echo "bench/inference.py: no runs/demo model, run make train first"; fi
	$(PY) bench/verify.py
	STEM_BENCH_RESULTS=bench/results $(PY) -m pytest -q tests/test_labelling_browser.py  # screenshot + labelling speed

clean: ## Remove generated data and logs (keeps .venv)
	rm -rf data runs lightning_logs .pytest_cache
