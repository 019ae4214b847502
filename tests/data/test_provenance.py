"""Provenance: the documents named for a batch hold exactly the batch's tokens."""

from __future__ import annotations

import numpy as np
import yaml
from tokenizers import Tokenizer

from olmo2.cli import main
from olmo2.data.documents import Document
from olmo2.data.loader import DataConfig, InstanceLoader
from olmo2.data.provenance import batch_provenance
from olmo2.data.tokenize import tokenize_documents

EOS = 100257


def docs(n=30):
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    return [
        Document(
            id=f"d{i}",
            text=" ".join(words[(i + k) % 6] + str(k) for k in range(5 + 3 * i)),
            source=f"s{i % 2}",
        )
        for i in range(n)
    ]


def test_batch_tokens_come_from_named_documents(tmp_path, dolma2_path):
    corpus = docs()
    tokenize_documents(corpus, str(dolma2_path), str(tmp_path), max_part_tokens=700, num_workers=1)
    ref = Tokenizer.from_file(str(dolma2_path))
    # each document's tokens, computed independently of the token files
    doc_tokens = {d.id: ref.encode(d.text, add_special_tokens=False).ids + [EOS] for d in corpus}
    loader = InstanceLoader(
        DataConfig([str(tmp_path)], seq_len=16, global_batch_size=4, seed=1), prefetch=0
    )
    for g in (0, 3, loader.batches_per_epoch + 1):
        batch = loader.get_batch(g)
        prov = batch_provenance(loader, g)
        assert [p.index for p in prov] == batch["index"].tolist()
        for row, inst in zip(batch["input_ids"].tolist(), prov):
            rebuilt = []
            for piece in inst.documents:
                toks = doc_tokens[piece.id]
                assert piece.doc_end - piece.doc_start == len(toks)
                rebuilt += toks[piece.start - piece.doc_start : piece.end - piece.doc_start]
            assert rebuilt == row


def test_cli_on_run_dir_and_data_dir(tmp_path, dolma2_path, capsys):
    data = tmp_path / "tokens"
    tokenize_documents(docs(), str(dolma2_path), str(data), num_workers=1)
    run = tmp_path / "run"
    run.mkdir()
    cfg = {
        "data": {
            "paths": [str(data)],
            "seq_len": 16,
            "global_batch_size": 4,
            "micro_batch_size": 2,
            "seed": 5,
        }
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert (
        main(["data", "provenance", str(run), "--step", "2", "--rank", "1", "--world-size", "2"])
        == 0
    )
    out = capsys.readouterr().out
    loader = InstanceLoader(
        DataConfig([str(data)], seq_len=16, global_batch_size=4, seed=5), prefetch=0
    )
    rows = loader.batch_rows(1, None)[1::2]
    for i in rows:
        assert f"instance {i}:" in out
    assert "2 instances from" in out and "source='s" in out
    assert main(["data", "provenance", str(data), "--batch", "0"]) == 2  # needs --seq-len etc.
    assert "--seq-len" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "provenance",
                str(data),
                "--batch",
                "0",
                "--seq-len",
                "16",
                "--global-batch-size",
                "4",
            ]
        )
        == 0
    )
    assert np.any([line.startswith("instance") for line in capsys.readouterr().out.splitlines()])
