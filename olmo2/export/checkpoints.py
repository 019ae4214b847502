"""`olmo2 checkpoints DIR|HUB_ID`: list checkpoints (local directories or hub revisions) with
their stage, step and tokens, parsed from the OLMo naming scheme
`stage1-step{N}-tokens{B}B`, `stage2-ingredient{k}-step{N}-tokens{B}B`, `main`, and the
post-training stages' `sft-step{N}`, `dpo-step{N}`, `grpo-step{N}`, `rm-step{N}`,
`ppo-step{N}`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

POST_STAGES = ("sft", "dpo", "grpo", "rm", "ppo")
_NAME = re.compile(
    rf"(?:(?P<stage>stage\d+|{'|'.join(POST_STAGES)})-)?"
    r"(?:ingredient(?P<ingredient>\d+)-)?step(?P<step>\d+)(?:-tokens(?P<tokens>\d+)B)?"
)


@dataclass
class CheckpointRef:
    name: str
    stage: str | None = None
    ingredient: int | None = None
    step: int | None = None
    tokens_b: int | None = None
    """Billions of tokens seen, as in the name."""

    @property
    def sort_key(self):
        return (self.name == "main", self.stage or "", self.ingredient or 0, self.step or -1)


def parse_name(name: str) -> CheckpointRef:
    m = _NAME.fullmatch(name)
    if not m:
        return CheckpointRef(name)
    return CheckpointRef(
        name,
        stage=m["stage"],
        ingredient=int(m["ingredient"]) if m["ingredient"] else None,
        step=int(m["step"]),
        tokens_b=int(m["tokens"]) if m["tokens"] else None,
    )


def checkpoint_name(
    stage: int | str, step: int, tokens: int = 0, ingredient: int | None = None
) -> str:
    """The OLMo revision name of pretraining stage `stage` (tokens rounded to whole billions
    as in the releases), or `{stage}-step{N}` for a post-training stage (`POST_STAGES`)."""
    if isinstance(stage, str):
        if stage not in POST_STAGES:
            raise ValueError(f"post-training stage {stage!r}: expected one of {POST_STAGES}")
        return f"{stage}-step{step}"
    ingr = f"ingredient{ingredient}-" if ingredient is not None else ""
    return f"stage{stage}-{ingr}step{step}-tokens{round(tokens / 1e9)}B"


def list_local(directory: str | Path) -> list[CheckpointRef]:
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such directory")
    refs = [
        parse_name(p.name)
        for p in d.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()
    ]
    return sorted(refs, key=lambda r: r.sort_key)


def list_hub(repo_id: str) -> list[CheckpointRef]:
    from huggingface_hub import list_repo_refs

    refs = list_repo_refs(repo_id)
    return sorted((parse_name(b.name) for b in refs.branches), key=lambda r: r.sort_key)


def add_arguments(p) -> None:
    p.add_argument(
        "target", help="a run/checkpoint directory, or a hub id like allenai/OLMo-2-0425-1B"
    )


def run(args) -> int:
    target = args.target
    if Path(target).exists():
        refs = list_local(target)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", target):
        refs = list_hub(target)
    else:
        raise FileNotFoundError(f"{target}: neither a directory nor a hub id (org/name)")
    print(f"{'revision':<48} {'stage':<8} {'ingr':>4} {'step':>10} {'tokens':>8}")
    for r in refs:
        tokens = f"{r.tokens_b}B" if r.tokens_b is not None else "-"
        print(
            f"{r.name:<48} {r.stage or '-':<8} {r.ingredient if r.ingredient is not None else '-':>4} "
            f"{r.step if r.step is not None else '-':>10} {tokens:>8}"
        )
    print(f"{len(refs)} checkpoint(s) in {target}")
    return 0
