"""Trainer tests run single-threaded: the tiny models here spend most of a 2-thread step
spinning in OpenMP barriers when other jobs share the cores (10 ms vs 600 ms per step)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
