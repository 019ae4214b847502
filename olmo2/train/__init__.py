"""Pretraining and the training loop that post-training reuses.

`config` (typed sections, YAML, overrides, the shared command line) · `setup` (the one
start-up path of every training command) · `data` (token-file batches) · `optim` (AdamW
groups, schedules, spike guard) · `trainer` (the loop; Objective / data-source protocols) ·
`checkpoint` · `distributed` (torchrun, DDP, FSDP2) · `metrics` · `merge` (`olmo2 merge`) ·
`cli` (`olmo2 train`).
"""
