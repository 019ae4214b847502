"""The stages of `olmo2 prepare`, each a list of tasks any executor can run (see
`olmo2/data/prepare.py` for the order and `olmo2/data/executors.py` for how they run)."""
