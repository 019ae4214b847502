import json

from olmo2.data.corpus import CorpusConfig, chunk_text, write_corpus


def test_chunks_cover_text_at_paragraphs():
    text = "\n\n".join(f"para {i} " + "x" * 50 for i in range(40))
    chunks = list(chunk_text(text, 500))
    assert len(chunks) > 3 and "\n\n".join(chunks) == text


def test_builtin_corpus_without_data_dir(tmp_path):
    stats = write_corpus(
        tmp_path, None, CorpusConfig(max_train_chars=200_000, heldout_chars=20_000)
    )
    assert stats["books"]["characters"] >= 160_000 and stats["code"]["characters"] >= 40_000
    rows = [json.loads(line) for line in open(tmp_path / "heldout.jsonl")]
    train_ids = {json.loads(line)["id"].split("#")[0] for line in open(tmp_path / "books.jsonl")}
    assert rows and not {r["id"].split("#")[0] for r in rows} & train_ids  # held-out is disjoint


def test_corpus_from_data_dir(tmp_path, data_dir):
    stats = write_corpus(
        tmp_path, data_dir, CorpusConfig(max_train_chars=100_000, heldout_chars=10_000)
    )
    first = json.loads(open(tmp_path / "books.jsonl").readline())
    assert first["id"].startswith("gutenberg:") and stats["heldout"]["documents"] >= 1
