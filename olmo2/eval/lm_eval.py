"""An lm-evaluation-harness backend for olmo2 models (optional: `pip install lm-eval`).

lm-eval (EleutherAI, docs/model_guide.md) asks a model for three things, which map onto our
harness:

* `loglikelihood([(context, continuation)])` -> `Harness.loglikelihood` (packed, batched)
* `loglikelihood_rolling([(text,)])` -> `perplexity.document_logprob` (EOS-conditioned)
* `generate_until([(context, {"until": [...], "max_gen_toks": N})])` -> greedy `Harness.generate`

From the command line, with lm-eval's own arguments (lm-eval's `lm_eval` script cannot load
model classes from other packages, lm-eval issue #1621, so this module is the launcher: it
registers `olmo2` and hands over to lm-eval's CLI):

    python -m olmo2.eval.lm_eval --model olmo2 --model_args path=DIR --tasks arc_easy

From Python, with an instance:

    import lm_eval
    from olmo2.eval.lm_eval import OLMo2LM
    lm_eval.simple_evaluate(model=OLMo2LM(path="path/to/ckpt"), tasks=["arc_easy"])

`path=` and `pretrained=` are the same argument (a checkpoint directory or hub id).
"""

from __future__ import annotations

import logging

# lm-eval's own models first: it loads them only into an empty registry (lm_eval/api/
# registry.py `get_model`), so registering "olmo2" first would hide local-completions & co.
import lm_eval.models  # noqa: F401, I001
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from olmo2.eval.formats import Request
from olmo2.eval.harness import Harness

log = logging.getLogger(__name__)


@register_model("olmo2")
class OLMo2LM(LM):
    def __init__(
        self,
        pretrained: str | None = None,
        path: str | None = None,
        model=None,
        tokenizer=None,
        batch_size: int | str = "auto",
        device: str | None = None,
        dtype: str | None = None,
        max_length: int | None = None,
        **kwargs,
    ):
        super().__init__()
        pretrained = pretrained or path
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            log.warning("device %s is not available (lm-eval's CLI default); using cpu", device)
            device = "cpu"
        if model is None:
            if pretrained is None:
                raise ValueError("OLMo2LM: pass path=PATH_OR_HUB_ID or model=/tokenizer=")
            import olmo2

            model, loaded_tok = olmo2.load(pretrained, dtype=dtype, device=device)
            tokenizer = tokenizer or loaded_tok
        if tokenizer is None:
            raise ValueError("OLMo2LM: the checkpoint has no tokenizer.json; pass tokenizer=")
        if isinstance(batch_size, str) and batch_size.isdigit():
            batch_size = int(batch_size)
        if kwargs:
            log.info("OLMo2LM ignores model_args %s", sorted(kwargs))
        # lm-eval's own rule: over-long requests keep the last tokens of their context
        self.harness = Harness(
            model, tokenizer, batch_size=batch_size, max_length=max_length, truncate=True
        )
        self.model, self.tokenizer = model, tokenizer
        self.pretrained = pretrained

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [tuple(r.args) for r in requests]
        self.harness.progress = not disable_tqdm
        return [(r.logprob, r.is_greedy) for r in self.harness.loglikelihood(pairs)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from olmo2.eval.perplexity import document_logprob

        out = []
        for r in tqdm(requests, desc="rolling", disable=disable_tqdm):
            lp, _ = document_logprob(self.model, self.tokenizer, r.args[0], self.harness.max_length)
            out.append(lp)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        reqs = []
        for r in requests:
            context, kwargs = r.args
            kwargs = dict(kwargs or {})
            if kwargs.get("do_sample") or kwargs.get("temperature", 0.0) > 0:
                raise ValueError("OLMo2LM.generate_until supports greedy decoding only")
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", 256))
            reqs.append(Request(context, kind="generate", stop=tuple(until), max_gen_toks=max_new))
        self.harness.progress = not disable_tqdm
        return self.harness.generate(reqs)

    # ---- chat support (lm-eval --apply_chat_template) ----------------------------------------
    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "source", "olmo2")).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str:
        return "tulu"

    def apply_chat_template(
        self, chat_history: list[dict], add_generation_prompt: bool = True
    ) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, add_generation_prompt=add_generation_prompt
        )


if __name__ == "__main__":
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
