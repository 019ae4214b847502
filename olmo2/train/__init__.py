"""Pretraining and the training loop that post-training reuses.

`config` (typed sections, YAML, overrides) · `data` (token-file batches) · `optim` (AdamW
groups, schedules, spike guard) · `trainer` (the loop; Objective / data-source / Callback
protocols) · `checkpoint` · `distributed` (torchrun, DDP, FSDP2) · `metrics` · `merge`
(`olmo2 merge`) · `cli` (`olmo2 train`).
"""
