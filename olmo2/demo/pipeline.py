"""The demo's stages, each a real `olmo2` command with a recipe written into the run.

Every stage records its result in `DIR/demo-state.json` when it finishes; a re-run skips
finished stages, and a stage cut short resumes from its newest checkpoint (the trainer's
automatic resume) or its partial output (`prepare` keeps complete token parts). The recipe
of each training stage is written to `DIR/recipes/` so any stage can be re-run by hand:
`olmo2 train DIR/recipes/stage1.yaml`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from olmo2.demo.config import DemoConfig
from olmo2.utils import write_text_atomic

log = logging.getLogger(__name__)
STATE = "demo-state.json"


class Pipeline:
    def __init__(self, out: Path, cfg: DemoConfig, data_dir: Path | None):
        self.out, self.cfg, self.data_dir = out, cfg, data_dir
        self.state = self._load_state()
        self.commands: list[str] = []

    # ---- bookkeeping ----------------------------------------------------------------------
    def _load_state(self) -> dict:
        config = dataclasses.asdict(self.cfg)
        path = self.out / STATE
        if path.is_file():
            state = json.loads(path.read_text())
            if state.get("config") != config:
                changed = sorted(k for k in config if state["config"].get(k) != config[k])
                raise ValueError(
                    f"{path}: this run was made with other settings ({', '.join(changed)}); "
                    "use another --out directory or delete this one"
                )
            return state
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            "config": config,
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "stages": {},
        }
        write_text_atomic(path, json.dumps(state, indent=2))
        return state

    def stage(self, name: str, fn: Callable[[], dict]) -> dict:
        """Run `fn` unless the stage is recorded as done; return its recorded result."""
        done = self.state["stages"].get(name)
        if done is not None:
            print(f"[demo] {name}: done earlier ({done['seconds']:.0f}s), skipping")
            return done
        print(f"\n[demo] ===== {name} =====", flush=True)
        t0, n_cmd = time.perf_counter(), len(self.commands)
        result = fn()
        result["seconds"] = time.perf_counter() - t0
        result["commands"] = self.commands[n_cmd:]
        self.state["stages"][name] = result
        write_text_atomic(self.out / STATE, json.dumps(self.state, indent=2))
        print(f"[demo] {name}: finished in {result['seconds']:.0f}s", flush=True)
        return result

    def olmo2(self, *argv: str) -> None:
        """Run one `olmo2` command in this process; fail loudly if it fails."""
        from olmo2.cli import main

        argv = [str(a) for a in argv]
        self.commands.append("olmo2 " + " ".join(shlex.quote(a) for a in argv))
        print(f"[demo] $ {self.commands[-1]}", flush=True)
        rc = main(argv)
        if rc:
            raise RuntimeError(f"`olmo2 {argv[0]}` failed with exit code {rc}")

    def recipe(self, name: str, body: dict) -> Path:
        path = self.out / "recipes" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, yaml.safe_dump(body, sort_keys=False))
        return path

    # ---- data -----------------------------------------------------------------------------
    def corpus(self) -> dict:
        from olmo2.data.corpus import CorpusConfig, write_corpus

        c = self.cfg
        stats = write_corpus(
            self.out / "corpus",
            self.data_dir,
            CorpusConfig(c.train_chars, c.code_fraction, c.heldout_chars),
        )
        return {"stats": stats, "source": "data directory" if self.data_dir else "packages"}

    def tokenizer(self) -> dict:
        corpus, out = self.out / "corpus", self.out / "tokenizer"
        out.mkdir(exist_ok=True)
        self.olmo2(
            "tokenizer", "train", "--input", corpus / "books.jsonl", corpus / "code.jsonl",
            "--vocab-size", self.cfg.vocab_size, "--output", out / "tokenizer.json",
        )  # fmt: skip
        return {"path": str(out / "tokenizer.json")}

    def prepare(self) -> dict:
        corpus, tok = self.out / "corpus", self.out / "tokenizer" / "tokenizer.json"
        decontam = ["--data-dir", self.data_dir] if self.data_dir else ["--no-decontam"]
        self.olmo2(
            "prepare", "--input", corpus / "books.jsonl", corpus / "code.jsonl",
            "--output", self.out / "data" / "train", "--tokenizer", tok,
            "--code-sources", "code*", *decontam,
        )  # fmt: skip
        self.olmo2(
            "prepare", "--input", corpus / "heldout.jsonl", "--output", self.out / "data" / "heldout",
            "--tokenizer", tok, "--no-filter", "all", "--dedup", "none", "--no-decontam",
        )  # fmt: skip
        manifest = json.loads((self.out / "data" / "train" / "manifest.json").read_text())
        return {"funnel": manifest["prepare"]["funnel"], "tokens": manifest["tokens"]}

    # ---- pretraining ----------------------------------------------------------------------
    def _model(self) -> dict:
        from olmo2.tokenizer import Tokenizer

        c = self.cfg
        tok = Tokenizer.from_file(self.out / "tokenizer" / "tokenizer.json")
        return {
            "size": "debug",
            "d_model": c.d_model,
            "n_layers": c.n_layers,
            "n_heads": c.n_heads,
            "n_kv_heads": c.n_heads,
            "ffn_hidden": c.ffn_hidden,
            "vocab_size": -(-tok.vocab_size // 128) * 128,  # padded like OLMo's 100278 → 100352
            "max_seq_len": c.seq_len,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        }

    def _pretrain_common(self, run_dir: Path, steps: int, seed: int) -> dict:
        c = self.cfg
        return {
            "data": {
                "paths": [str(self.out / "data" / "train")],
                "seq_len": c.seq_len,
                "global_batch_size": c.stage1_batch,
                "micro_batch_size": c.stage1_batch,
                "seed": seed,
                "eval_paths": [str(self.out / "data" / "heldout")],
                "eval_max_chunks": 16,
                "tokenizer": str(self.out / "tokenizer" / "tokenizer.json"),
            },
            "trainer": {
                "run_dir": str(run_dir),
                "max_steps": steps,
                "device": c.device,
                "precision": c.precision,
                "seed": seed,
                "eval_interval": max(1, steps // 4),
            },
            "checkpoint": {"save_interval": max(1, steps // 4), "keep_last": 1},
            "logging": {"log_interval": max(1, steps // 10), "progress_bar": False},
        }

    def stage1(self) -> dict:
        c = self.cfg
        run_dir = self.out / "stage1"
        body = {
            "model": self._model(),
            "optim": {"lr": c.stage1_lr, "spike_sigma": None},
            "schedule": {
                "name": "cosine",
                "warmup_steps": c.stage1_warmup,
                "t_max": round(c.stage1_steps * c.stage1_horizon),
                "alpha_f": 0.1,
            },
            **self._pretrain_common(run_dir, c.stage1_steps, seed=0),
        }
        body["checkpoint"]["keep_last"] = None  # every checkpoint, for the explorer plot
        self.olmo2("train", self.recipe("stage1", body))
        return {"run_dir": str(run_dir), "checkpoint": str(_latest(run_dir))}

    def anneal(self, ingredient: int, seed: int, stage1_ckpt: str) -> dict:
        c = self.cfg
        run_dir = self.out / f"stage2-ingredient{ingredient}"
        body = {
            "model": {"load_path": stage1_ckpt},
            "optim": {"lr": c.stage1_lr, "spike_sigma": None},
            "schedule": {"name": "linear", "alpha_f": 0.0, "lr_from_checkpoint": True},
            **self._pretrain_common(run_dir, c.anneal_steps, seed=seed),
        }
        body["trainer"].update(stage=2, ingredient=ingredient)
        self.olmo2("train", self.recipe(f"stage2-ingredient{ingredient}", body))
        return {"run_dir": str(run_dir), "checkpoint": str(_latest(run_dir))}

    def merge(self, ingredients: list[str]) -> dict:
        out = self.out / "merged"
        if not (out / "config.json").is_file():  # written last and atomically by `merge`
            self.olmo2("merge", *ingredients, "--output", out)
        return {"checkpoint": str(out)}

    # ---- post-training --------------------------------------------------------------------
    def posttrain_data(self) -> dict:
        from olmo2.demo.tasks import write_posttrain_data

        return {"files": write_posttrain_data(self.out / "posttrain", self.data_dir, self.cfg)}

    def _post_common(self, run_dir: Path, data: str, batch: int, seq_len: int) -> dict:
        c = self.cfg
        return {
            "data": {
                "paths": [str(self.out / "posttrain" / data)],
                "seq_len": seq_len,
                "global_batch_size": batch,
                "micro_batch_size": batch,
            },
            "trainer": {"run_dir": str(run_dir), "device": c.device, "precision": c.precision},
            "checkpoint": {"save_interval": 20, "keep_last": 1},  # an interrupted stage resumes
            "logging": {"log_interval": 10, "progress_bar": False},
        }

    def sft(self, base: str) -> dict:
        c = self.cfg
        run_dir = self.out / "sft"
        body = {
            "model": {"load_path": base},
            **self._post_common(run_dir, "sft.jsonl", c.sft_batch, c.seq_len),
        }
        body["trainer"]["max_steps"] = c.sft_steps
        body["optim"] = {"lr": c.sft_lr}
        body["sft"] = {"reduction": "mean", "packing": True}
        self.olmo2("sft", self.recipe("sft", body))
        return {"run_dir": str(run_dir), "checkpoint": str(_latest(run_dir))}

    def dpo(self, sft_ckpt: str) -> dict:
        c = self.cfg
        run_dir = self.out / "dpo"
        body = {
            "model": {"load_path": sft_ckpt},
            **self._post_common(run_dir, "dpo.jsonl", c.dpo_batch, c.seq_len),
        }
        body["data"]["epochs"] = 1.0
        body["optim"] = {"lr": c.dpo_lr}
        body["dpo"] = {"loss": "dpo_norm", "beta": c.dpo_beta}
        self.olmo2("dpo", self.recipe("dpo", body))
        return {"run_dir": str(run_dir), "checkpoint": str(_latest(run_dir))}

    def grpo(self, dpo_ckpt: str) -> dict:
        c = self.cfg
        run_dir = self.out / "grpo"
        body = {
            "model": {"load_path": dpo_ckpt},
            **self._post_common(run_dir, "grpo.jsonl", c.grpo_prompts, 64),
        }
        body["data"]["micro_batch_size"] = c.grpo_prompts * c.grpo_samples
        body["trainer"]["max_steps"] = c.grpo_steps
        body["optim"] = {"lr": c.grpo_lr}
        body["schedule"] = {"name": "constant"}
        body["grpo"] = {"num_samples": c.grpo_samples, "max_new_tokens": 4, "beta": 0.01}
        self.olmo2("grpo", self.recipe("grpo", body))
        return {"run_dir": str(run_dir), "checkpoint": str(_latest(run_dir))}

    def rm(self, sft_ckpt: str) -> dict:
        """`olmo2 rm` on the DPO preference rows from the SFT model (the OLMo 2 RM's init)."""
        c = self.cfg
        run_dir = self.out / "rm"
        body = {
            "model": {"load_path": sft_ckpt},
            **self._post_common(run_dir, "dpo.jsonl", c.dpo_batch, c.seq_len),
        }
        body["data"]["epochs"] = 1.0
        body["optim"] = {"lr": c.rm_lr}
        self.olmo2("rm", self.recipe("rm", body))
        return {"run_dir": str(run_dir), "checkpoint": str(_latest(run_dir))}

    def ppo(self, dpo_ckpt: str, rm_ckpt: str) -> dict:
        """`olmo2 ppo` from the DPO model, its value model from the reward model, on the
        addition prompts repeated to one rollout's worth of rows."""
        c = self.cfg
        run_dir, rows = self.out / "ppo", self.out / "posttrain" / "ppo.jsonl"
        prompts = (self.out / "posttrain" / "grpo.jsonl").read_text().splitlines(keepends=True)
        n = -(-c.ppo_rollout // len(prompts))  # copies of the prompt set
        write_text_atomic(rows, "".join(prompts * n))
        body = {
            "model": {"load_path": dpo_ckpt},
            **self._post_common(run_dir, "ppo.jsonl", c.ppo_rollout, 64),
        }
        body["trainer"]["max_steps"] = c.ppo_steps
        body["optim"] = {"lr": c.ppo_lr}
        body["schedule"] = {"name": "constant"}
        body["ppo"] = {"value_path": rm_ckpt, "max_new_tokens": 4, "ppo_epochs": c.ppo_epochs,
                       "mini_batches": 1}  # fmt: skip
        self.olmo2("ppo", self.recipe("ppo", body))
        return {"run_dir": str(run_dir), "checkpoint": str(_latest(run_dir))}


def _latest(run_dir: Path) -> Path:
    from olmo2.train.checkpoint import latest

    ckpt = latest(run_dir)
    if ckpt is None:
        raise RuntimeError(f"{run_dir}: the stage finished without a checkpoint")
    return ckpt
