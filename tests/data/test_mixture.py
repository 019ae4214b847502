"""Mixtures: ratios against a budget, repeats, downsampling, and what the loader then sees."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from olmo2.cli import main
from olmo2.data.loader import DataConfig, InstanceLoader
from olmo2.data.mixture import MixtureConfig, resolve


def make_source(d, sizes, value):
    d.mkdir()
    for k, n in enumerate(sizes):
        np.full(n, value, np.uint32).tofile(d / f"part-{k:05d}.npy")
    return str(d)


@pytest.fixture
def sources(tmp_path):
    a = make_source(tmp_path / "a", [1005, 503], 1)  # 100 + 50 instances of 10
    b = make_source(tmp_path / "b", [200], 2)  # 20 instances
    return a, b


def write_mix(tmp_path, body):
    p = tmp_path / "mix.yaml"
    p.write_text(yaml.safe_dump(body))
    return p


def token_share(mix, seq_len=10):
    ld = InstanceLoader(
        DataConfig(
            mix.paths, seq_len=seq_len, global_batch_size=1, path_instances=mix.path_instances
        )
    )
    vals = np.concatenate(
        [
            ld.tokens[f][sp[0, 0] : sp[0, 0] + seq_len]
            for f, sp in map(ld.segments, range(ld.n_instances))
        ]
    )
    return ld.n_instances, (vals == 1).mean()


def test_ratio_budget_up_and_downsamples(tmp_path, sources):
    a, b = sources
    body = {"seq_len": 10, "total_tokens": 1000, "sources": [
        {"name": "a", "paths": [a], "ratio": 0.5}, {"name": "b", "paths": [b + "/*.npy"], "ratio": 0.5}]}  # fmt: skip
    mix = resolve(MixtureConfig.from_yaml(write_mix(tmp_path, body)))
    # a: 50 of its 150 instances (downsampled); b: 50 = 2 full copies + 10 instances (upsampled)
    assert [s.tokens for s in mix.sources] == [500, 500]
    assert mix.paths.count(b + "/part-00000.npy") == 3 and mix.path_instances[-1] == 10
    n, share = token_share(mix)
    assert n == 100 and share == 0.5
    # downsampling keeps instances spread evenly over both of a's files
    ld = InstanceLoader(
        DataConfig(
            mix.paths[:2], seq_len=10, global_batch_size=1, path_instances=mix.path_instances[:2]
        )
    )
    per_file = [sum(1 for i in range(ld.n_instances) if ld.segments(i)[0] == f) for f in range(2)]
    assert per_file == [34, 16]


def test_repeat_counts_and_cli(tmp_path, sources, capsys):
    a, b = sources
    body = {
        "seq_len": 10,
        "sources": [
            {"name": "a", "paths": [a], "repeat": 1},
            {"name": "b", "paths": [b], "repeat": 2.5},
        ],
    }
    p = write_mix(tmp_path, body)
    assert main(["data", "mixture", str(p), "--output", str(tmp_path / "data.yaml")]) == 0
    out = capsys.readouterr().out
    assert "a" in out and "75.0%" in out and "25.0%" in out  # 1500 vs 500 tokens
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())["data"]
    n, share = token_share(resolve(MixtureConfig.from_yaml(p)))
    assert n == 200 and share == 0.75 and len(data["paths"]) == len(data["path_instances"])


def test_bad_mixtures(tmp_path, sources):
    a, _ = sources
    with pytest.raises(ValueError, match="need `total_tokens`"):
        resolve(
            MixtureConfig.from_yaml(
                write_mix(tmp_path, {"seq_len": 10, "sources": [{"paths": [a], "ratio": 1}]})
            )
        )
    with pytest.raises(ValueError, match="exactly one of"):
        resolve(
            MixtureConfig.from_yaml(
                write_mix(tmp_path, {"seq_len": 10, "sources": [{"paths": [a]}]})
            )
        )
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve(
            MixtureConfig.from_yaml(
                write_mix(
                    tmp_path, {"seq_len": 10, "sources": [{"paths": ["nowhere"], "repeat": 1}]}
                )
            )
        )
