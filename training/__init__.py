"""Training stage: the paper's six defect classifiers (PyTorch Lightning), device-resident data, DDP,
checkpoints that survive requeue, and the paper's evaluation. Entry point: ``python -m training``."""
