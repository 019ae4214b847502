from olmo2.cli import main
from olmo2.export.checkpoints import checkpoint_name, list_local, parse_name
from tests.model.helpers import save_random


def test_parse_olmo_revision_names():
    r = parse_name("stage1-step140000-tokens294B")
    assert (r.stage, r.step, r.tokens_b, r.ingredient) == ("stage1", 140000, 294, None)
    r = parse_name("stage2-ingredient3-step23852-tokens50B")
    assert (r.stage, r.ingredient, r.step, r.tokens_b) == ("stage2", 3, 23852, 50)
    assert parse_name("main").step is None
    assert checkpoint_name(1, 1907359, 4_000_000_000_000) == "stage1-step1907359-tokens4000B"


def test_list_local_directory(tmp_path, capsys):
    for name in ("stage1-step20-tokens1B", "stage1-step10-tokens0B", "main"):
        save_random(tmp_path, "mha")[1].rename(tmp_path / name)
    (tmp_path / "not-a-checkpoint").mkdir()
    assert [r.name for r in list_local(tmp_path)] == [
        "stage1-step10-tokens0B",
        "stage1-step20-tokens1B",
        "main",
    ]
    assert main(["checkpoints", str(tmp_path)]) == 0
    assert "3 checkpoint(s)" in capsys.readouterr().out
    assert main(["checkpoints", str(tmp_path / "nope")]) == 2
