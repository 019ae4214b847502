"""Answer evaluation requests with a model: batched log-likelihoods and greedy generation.

**One forward per unique context.** Requests that share a context (the choices of one
question) are packed into a single row: `context | cont_1 | cont_2 | ...`, with explicit
RoPE positions (every continuation starts at position len(context)) and a tree-shaped
attention mask (a continuation token sees the context and the earlier tokens of its own
continuation only). One forward thus scores all choices exactly as separate forwards of
`context + cont_i` would, at the cost of one context. Rows are sorted by length (longest
first, so an out-of-memory error shows up at once) and batched by a token budget; `auto`
finds the largest budget that fits on GPU by halving on OOM.

Tokenisation follows lm-eval's `_encode_pair`: trailing spaces of the context move to the
continuation, the continuation's tokens are those of `encode(context + continuation)` past
`encode(context)`, and an empty context becomes the EOS token.

Results can be cached on disk (sqlite, keyed by model fingerprint and request) so a rerun or
a second task sharing requests costs nothing.

In-loop use (the model's train/eval mode is restored afterwards):

    results = evaluate(Harness(model, tokenizer, progress=False),
                       ["arc_easy:rc::olmes", "hellaswag:rc::olmes"], data_dir, limit=200)
    results["tasks"]["arc_easy:rc::olmes"]["primary_score"]
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from olmo2.eval.formats import LLResult, Request
from olmo2.infer.generate import SamplingConfig, complete, fit_prompt
from olmo2.model.loss import token_logps

log = logging.getLogger(__name__)

CPU_TOKEN_BUDGET = 4096
"""Tokens per forward on CPU with batch_size="auto" (a few hundred MB of activations)."""
GPU_START_BUDGET = 65536
MAX_SCORED = 2048
"""Scored tokens per forward at most: each is a V-sized row of logits (800 MB at 100k)."""


@dataclass
class Group:
    """One packed row: a context and (some of) the continuations that follow it."""

    ctx: tuple[int, ...]
    conts: list[tuple[int, ...]]
    ids: list[int]  # index of each continuation's request

    @property
    def length(self) -> int:
        return len(self.ctx) + sum(len(c) for c in self.conts)


def encode_pair(
    tokenizer, context: str, continuation: str, memo: dict | None = None
) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids); `memo` caches context encodings across calls."""
    n = len(context) - len(context.rstrip(" "))
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    if not continuation:
        raise ValueError("a log-likelihood request needs a non-empty continuation")
    whole = tokenizer.encode(context + continuation)
    if memo is None or context not in memo:
        ctx = tokenizer.encode(context) if context else []
        if memo is not None:
            memo[context] = ctx
    else:
        ctx = memo[context]
    cont = whole[len(ctx) :]
    if not ctx:
        ctx = [tokenizer.eos_token_id]
    return ctx, cont


def model_fingerprint(model: torch.nn.Module) -> str:
    """A cheap identity of the weights: sha256 over every tensor's name, shape, sum and first
    values (changes whenever the weights do, without hashing gigabytes). Packed entries of
    quantized layers (tuples of tensors and settings) are hashed part by part."""
    h = hashlib.sha256()

    def add(name: str, value) -> None:
        if isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                add(f"{name}.{i}", v)
        elif isinstance(value, torch.Tensor):
            flat = value.detach().reshape(-1)
            if flat.is_quantized:
                flat = flat.int_repr()
            total = torch.sum(flat, dtype=torch.float64).item()  # no float64 copy
            h.update(f"{name}{tuple(value.shape)}{value.dtype}{total:.10e}".encode())
            h.update(flat[:64].float().cpu().numpy().tobytes())
        else:
            h.update(f"{name}={value!r}".encode())

    for name, value in sorted(model.state_dict().items()):
        add(name, value)
    return h.hexdigest()[:16]


class ResultCache:
    """sqlite key -> JSON value; keys hash the model fingerprint and the request."""

    def __init__(self, path: str | Path, model_id: str):
        self.db = sqlite3.connect(str(path))
        self.db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT)")
        self.model_id = model_id

    def key(self, *parts) -> str:
        return hashlib.sha256(json.dumps([self.model_id, *parts]).encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, object]:
        out = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT key, value FROM results WHERE key IN ({','.join('?' * len(chunk))})"
            out.update({k: json.loads(v) for k, v in self.db.execute(q, chunk)})
        return out

    def put_many(self, items: dict[str, object]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO results VALUES (?, ?)",
            [(k, json.dumps(v)) for k, v in items.items()],
        )
        self.db.commit()


class Harness:
    """Scores requests with an `Olmo2` model and its tokenizer."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        batch_size: int | str = "auto",
        max_length: int | None = None,
        cache_path: str | Path | None = None,
        progress: bool = True,
        truncate: bool = False,
    ):
        """`truncate`: a request longer than `max_length` keeps the last tokens of its context
        (lm-eval's rule) instead of being refused (`olmo2.infer.generate.fit_prompt`, the rule
        of every olmo2 command)."""
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.max_length = max_length or model.config.max_seq_len
        self.device = next(model.parameters()).device
        self.progress = progress
        self.budget = CPU_TOKEN_BUDGET if self.device.type == "cpu" else GPU_START_BUDGET
        self.fingerprint = model_fingerprint(model)
        self.cache = ResultCache(cache_path, self.fingerprint) if cache_path else None
        self.cache_path = cache_path
        self.truncate = truncate
        check_vocab(model, tokenizer)

    # ---- log-likelihood ------------------------------------------------------------------
    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[LLResult]:
        """Σ log p(continuation | context) for each (context, continuation) pair."""
        unique = list(dict.fromkeys(pairs))
        cached = {}
        if self.cache:
            keys = [self.cache.key("ll", c, x) for c, x in unique]
            hit = self.cache.get_many(keys)
            cached = {u: LLResult(*hit[k]) for u, k in zip(unique, keys, strict=True) if k in hit}
        todo = [u for u in unique if u not in cached]
        with eval_mode(self.model):
            scored = dict(zip(todo, self._score(todo), strict=True)) if todo else {}
        if self.cache and scored:
            self.cache.put_many(
                {
                    self.cache.key("ll", c, x): [r.logprob, r.is_greedy, r.num_tokens]
                    for (c, x), r in scored.items()
                }
            )
        found = {**cached, **scored}
        return [found[p] for p in pairs]

    def _score(self, pairs: list[tuple[str, str]]) -> list[LLResult]:
        groups = self._groups(pairs)
        out: list[LLResult | None] = [None] * len(pairs)
        bar = tqdm(total=len(pairs), desc="loglikelihood", unit="req", disable=not self.progress)
        i = 0
        while i < len(groups):
            n = self._rows_for(groups, i)
            try:
                results = self._forward_packed(groups[i : i + n])
            except torch.OutOfMemoryError:
                if self.batch_size != "auto" or n == 1:
                    raise
                self.budget //= 2
                log.info("out of memory: token budget halved to %d", self.budget)
                torch.cuda.empty_cache()
                continue
            for g, res in zip(groups[i : i + n], results, strict=True):
                for rid, r in zip(g.ids, res, strict=True):
                    out[rid] = r
                bar.update(len(g.ids))
            i += n
        bar.close()
        assert all(r is not None for r in out)
        return out  # type: ignore[return-value]

    def _groups(self, pairs: list[tuple[str, str]]) -> list[Group]:
        """Encode, fit to max_length, group by context, split large groups, and sort longest
        first."""
        by_ctx: dict[tuple[int, ...], Group] = {}
        memo: dict[str, list[int]] = {}
        for rid, (c, x) in enumerate(pairs):
            ctx, cont = self._fit(*encode_pair(self.tokenizer, c, x, memo))
            g = by_ctx.setdefault(ctx, Group(ctx, [], []))
            g.conts.append(tuple(cont))
            g.ids.append(rid)
        groups = []
        for g in by_ctx.values():  # keep rows short when a context has many continuations
            cur = Group(g.ctx, [], [])
            for cont, rid in zip(g.conts, g.ids, strict=True):
                if cur.conts and cur.length + len(cont) > max(2 * len(g.ctx), 512):
                    groups.append(cur)
                    cur = Group(g.ctx, [], [])
                cur.conts.append(cont)
                cur.ids.append(rid)
            groups.append(cur)
        return sorted(groups, key=lambda g: -g.length)

    def _fit(self, ctx: list[int], cont: list[int]) -> tuple[tuple[int, ...], list[int]]:
        n, L = len(ctx) + len(cont), self.max_length
        if n > L and not self.truncate:
            raise ValueError(
                f"a log-likelihood request is {n} tokens (context {len(ctx)} + continuation "
                f"{len(cont)}), more than the model's context of {L} tokens (--truncate keeps "
                "the last tokens of the context, as lm-eval does)"
            )
        if len(cont) >= L:  # cutting the scored tokens would change what is measured (bytes)
            raise ValueError(
                f"a log-likelihood request's continuation alone is {len(cont)} tokens, more than "
                f"the model's context of {L} leaves after one context token; only the context "
                "can be truncated (for long_bpb__L, run an L no longer than the model's context)"
            )
        return tuple(ctx[-(L - len(cont)) :]), cont

    def _rows_for(self, groups: list[Group], i: int) -> int:
        """Rows of the next forward: the batch size, or what fits the token budget (sorted:
        the first row sets the padded width), and at most MAX_SCORED scored tokens."""
        n = len(groups) - i
        if self.batch_size != "auto":
            n = min(self.batch_size, n)
        else:
            n = min(n, self.budget // groups[i].length)
        scored = itertools.accumulate(sum(map(len, g.conts)) for g in groups[i : i + n])
        return max(1, sum(1 for total in scored if total <= MAX_SCORED))

    @torch.no_grad()
    def _forward_packed(self, groups: list[Group]) -> list[list[LLResult]]:
        B, T = len(groups), max(g.length for g in groups)
        ids = torch.zeros(B, T, dtype=torch.long)
        pos = torch.zeros(B, T, dtype=torch.long)
        seg = torch.full((B, T), -1, dtype=torch.long)  # -1 pad, 0 context, k = continuation k
        where: list[tuple[int, int, int]] = []  # (row, position predicting token, token)
        owners: list[tuple[int, int]] = []  # (row, continuation index) per scored token
        for b, g in enumerate(groups):
            P = len(g.ctx)
            ids[b, :P], pos[b, :P], seg[b, :P] = torch.tensor(g.ctx), torch.arange(P), 0
            s = P
            for k, cont in enumerate(g.conts):
                L = len(cont)
                ids[b, s : s + L] = torch.tensor(cont)
                pos[b, s : s + L] = torch.arange(P, P + L)
                seg[b, s : s + L] = k + 1
                prev = [P - 1] + list(range(s, s + L - 1))
                where += [(b, p, t) for p, t in zip(prev, cont, strict=True)]
                owners += [(b, k)] * L
                s += L
        logp, greedy = self._token_logprobs(ids, pos, seg, where)
        res: dict[tuple[int, int], list] = {}
        for (b, k), lp, gr in zip(owners, logp.tolist(), greedy.tolist(), strict=True):
            acc = res.setdefault((b, k), [0.0, True, 0])
            acc[0] += lp
            acc[1] = acc[1] and gr
            acc[2] += 1
        return [[LLResult(*res[(b, k)]) for k in range(len(g.conts))] for b, g in enumerate(groups)]

    def _token_logprobs(self, ids, pos, seg, where):
        """(log p, is-argmax) of each (row, position, token) in `where`: one forward with the
        continuations' own positions and a tree mask (a token sees the context and the
        earlier tokens of its own continuation; padding sees itself only). The LM head runs
        only at positions that predict something (the context's last one predicts the first
        token of every continuation)."""
        dev = self.device
        ids, pos, seg = ids.to(dev), pos.to(dev), seg.to(dev)
        T = ids.shape[1]
        mask = tree_mask(seg)
        rows, cols, target = (torch.tensor(c, device=dev) for c in zip(*where, strict=True))
        keep = torch.zeros(ids.shape, dtype=torch.bool, device=dev)
        keep[rows, cols] = True
        logits = self.model(ids, positions=pos, attn_mask=mask, logits_to_keep=keep)
        row_of = keep.flatten().cumsum(0) - 1  # [B·T] -> row of `logits`
        logits = logits[row_of[rows * T + cols]]
        return token_logps(logits, target).cpu(), (logits.argmax(-1) == target).cpu()

    # ---- reward-model scores -------------------------------------------------------------
    @torch.no_grad()
    def rewards(self, requests: Sequence[Request]) -> list[float]:
        """A reward model's score of each request's `context` (a rendered conversation) at its
        last token: rows sorted longest first, right-padded with the config's pad id, batched
        by `batch_size` rows or the token budget."""
        from olmo2.model.reward import sequence_scores

        pad = self.model.config.pad_token_id
        enc = [
            fit_prompt(self.tokenizer.encode(r.context), 0, self.max_length, self.truncate)
            for r in requests
        ]
        order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
        out: list[float] = [0.0] * len(enc)
        bar = tqdm(total=len(enc), desc="reward", unit="req", disable=not self.progress)
        i = 0
        with eval_mode(self.model):
            while i < len(order):
                T = len(enc[order[i]])
                n = self.batch_size if self.batch_size != "auto" else max(1, self.budget // T)
                rows = order[i : i + n]
                ids = torch.full((len(rows), T), pad, dtype=torch.long)
                for b, j in enumerate(rows):
                    ids[b, : len(enc[j])] = torch.tensor(enc[j])
                scores = sequence_scores(self.model, ids.to(self.device), pad).float().cpu()
                for j, s in zip(rows, scores.tolist(), strict=True):
                    out[j] = s
                bar.update(len(rows))
                i += len(rows)
        bar.close()
        return out

    # ---- generation ----------------------------------------------------------------------
    def generate(self, requests: Sequence[Request]) -> list[str]:
        """Completions, cut at the first stop string (and at EOS): greedy, or sampled for
        requests with a temperature (seeded per batch, so a rerun gives the same samples)."""
        out: list[str | None] = [None] * len(requests)
        keys = [None] * len(requests)
        if self.cache:
            keys = [self.cache.key(*_gen_key(r)) for r in requests]
            hit = self.cache.get_many(keys)
            for i, k in enumerate(keys):
                if k in hit:
                    out[i] = hit[k]
        todo = [i for i, o in enumerate(out) if o is None]
        enc = {i: self.tokenizer.encode(requests[i].context) for i in todo}
        todo.sort(key=lambda i: -len(enc[i]))
        bs = self.batch_size if self.batch_size != "auto" else max(1, min(32, self.budget // 512))
        bar = tqdm(total=len(todo), desc="generate", unit="req", disable=not self.progress)
        buckets: dict[tuple, list[int]] = {}
        for i in todo:
            r = requests[i]
            buckets.setdefault((r.stop, r.max_gen_toks, *_sampling(r)), []).append(i)
        for (stop, max_new, *_), idx in buckets.items():
            r0 = requests[idx[0]]
            for j in range(0, len(idx), bs):
                batch = idx[j : j + bs]
                cfg = SamplingConfig(max_new, r0.temperature, None, r0.top_p, r0.seed + j)
                with eval_mode(self.model):
                    texts = self._generate_batch([enc[i] for i in batch], stop, cfg)
                for i, t in zip(batch, texts, strict=True):
                    out[i] = t
                if self.cache:
                    self.cache.put_many({keys[i]: out[i] for i in batch})
                bar.update(len(batch))
        bar.close()
        return out  # type: ignore[return-value]

    def _generate_batch(
        self, prompts: list[list[int]], stop: tuple[str, ...], cfg: SamplingConfig
    ) -> list[str]:
        fit = [fit_prompt(p, cfg.max_new_tokens, self.max_length, self.truncate) for p in prompts]
        tok = self.tokenizer
        drains = complete(
            self.model, fit, cfg,
            tokenizer=tok, stop=stop, stop_token_ids=[tok.eos_token_id],
        )  # fmt: skip
        return [d.text for d in drains]


def _sampling(r: Request) -> tuple:
    return (r.temperature, r.top_p, r.seed) if r.temperature > 0 else (0.0, None, 0)


def _gen_key(r: Request) -> tuple:
    """What a completion depends on: the greedy key of earlier releases (so their caches stay
    valid), plus the sampling settings and the sample's index when sampling."""
    key = ("gen", r.context, list(r.stop), r.max_gen_toks)
    return key + (_sampling(r) + (r.idx,) if r.temperature > 0 else ())


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module | None):
    """Eval mode for the duration (the trainer's in-loop evaluation gets its model back in
    the mode it was in); nothing for a harness whose model lives in a backend."""
    if model is None:
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def tree_mask(seg_BT: torch.Tensor) -> torch.Tensor:
    """The attention mask [B, 1, T, T] of rows holding a shared context and branches after it
    (`seg` 0 = context, k > 0 = branch k, −1 = padding): causal, a branch token sees the
    context and its own branch only, a pad sees itself (no empty softmax row). The harness's
    packed continuations and `olmo2 rm`'s chosen/rejected branches use it."""
    T = seg_BT.shape[1]
    q = torch.arange(T, device=seg_BT.device)
    causal = q[None, :] <= q[:, None]  # [Tq, Tk]
    key, query = seg_BT[:, None, :], seg_BT[:, :, None]
    eye = torch.eye(T, dtype=torch.bool, device=seg_BT.device)[None]
    return ((causal[None] & ((key == 0) | (key == query)) & (key >= 0)) | eye)[:, None]


def check_model_kind(task, harness) -> None:
    """Reward-model tasks need a reward model (`Olmo2ForSequenceClassification`), every other
    task a causal LM; say which before any model time is spent."""
    from olmo2.model.reward import Olmo2Reward

    is_rm = isinstance(getattr(harness, "model", None), Olmo2Reward)
    if task.needs_reward_model and not is_rm:
        raise ValueError(
            f"task {task.key} scores preference pairs with a reward model (an "
            "Olmo2ForSequenceClassification checkpoint, e.g. from `olmo2 rm`); the model given "
            "is a causal LM"
        )
    if is_rm and not task.needs_reward_model:
        raise ValueError(
            f"task {task.key} needs a causal LM; the model given is a reward model "
            "(Olmo2ForSequenceClassification), which runs the reward-model tasks only "
            "(hh_rlhf_harmless:rm::heldout, hh_rlhf_harmless:rm::all)"
        )


def check_vocab(model: torch.nn.Module, tokenizer) -> None:
    """A tokenizer whose ids do not fit the model's embedding table gives garbage or an index
    error deep inside a forward; say so up front."""
    v_model, v_tok = model.config.vocab_size, tokenizer.vocab_size
    if v_tok > v_model:
        raise ValueError(
            f"tokenizer has {v_tok} ids but the model's vocabulary is {v_model}: "
            "they do not belong together (pass the checkpoint's own tokenizer)"
        )


def naive_loglikelihood(model, tokenizer, pairs: Sequence[tuple[str, str]]) -> list[LLResult]:
    """Reference scorer: one plain `model(context + continuation)` forward per request."""
    out = []
    with torch.no_grad():
        for c, x in pairs:
            ctx, cont = encode_pair(tokenizer, c, x)
            logits = model(torch.tensor([ctx + cont]), logits_to_keep=len(cont) + 1)[0, :-1]
            t = torch.tensor(cont)
            lp = token_logps(logits, t).sum().item()
            out.append(LLResult(lp, bool((logits.argmax(-1) == t).all()), len(cont)))
    return out


# ---- running tasks --------------------------------------------------------------------------
def chat_request(req: Request, tokenizer) -> Request:
    """Render a request through the chat template, ending with the assistant header.

    Few-shot examples become earlier user/assistant turns when the task provides them
    (OLMES `fewshot_as_multiturn`); otherwise the whole prompt is one user turn. The
    assistant's turn starts with the request's `assistant_prefix`. A scored continuation
    loses its leading space (the answer starts the assistant's turn). A "reward" request is
    a rendered conversation already and stays as it is."""
    if req.kind == "reward":
        return req
    messages = []
    for user, assistant in req.chat_turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": req.chat_query or req.context})
    ctx = tokenizer.apply_chat_template(messages, add_generation_prompt=True) + req.assistant_prefix
    cont = req.continuation.lstrip(" ") if req.kind == "loglikelihood" else req.continuation
    return replace(
        req, context=ctx, continuation=cont, chat_turns=(), chat_query="", assistant_prefix=""
    )


def evaluate(
    harness: Harness,
    task_keys: Sequence[str],
    data_dir: Path,
    limit: int | None = None,
    chat: bool = False,
    dump_requests: str | Path | None = None,
    judge=None,
) -> dict:
    """Run tasks (suites expanded) and return per-task metrics and suite aggregates. `judge`
    (an `olmo2.eval.judge.Judge`) serves the judged tasks.

    All log-likelihood requests of all tasks go to the harness together, so requests shared
    between tasks (e.g. MMLU subjects' unconditional prompts) are scored once."""
    from olmo2.eval.tasks import get_task, resolve

    leaf_keys, suites = resolve(list(task_keys))
    plan = []
    for key in leaf_keys:
        task = get_task(key)
        check_model_kind(task, harness)
        task.check_ready()
        task.prepare(harness=harness, judge=judge)
        docs = task.docs(Path(data_dir), limit)
        reqs = task.requests(docs)
        if chat or task.always_chat:
            reqs = [chat_request(r, harness.tokenizer) for r in reqs]
        plan.append((task, docs, reqs))
    if dump_requests:
        _dump(plan, dump_requests)
    ll = [
        (r.context, r.continuation)
        for _, _, reqs in plan
        for r in reqs
        if r.kind == "loglikelihood"
    ]
    gen = [r for _, _, reqs in plan for r in reqs if r.kind == "generate"]
    rw = [r for _, _, reqs in plan for r in reqs if r.kind == "reward"]
    log.info("%d tasks: %d log-likelihood, %d generation and %d reward requests",
             len(plan), len(ll), len(gen), len(rw))  # fmt: skip
    answers_of = {
        "loglikelihood": iter(harness.loglikelihood(ll)) if ll else iter(()),
        "generate": iter(harness.generate(gen)) if gen else iter(()),
        "reward": iter(harness.rewards(rw)) if rw else iter(()),
    }
    tasks = {}
    for task, docs, reqs in plan:
        answers = [next(answers_of[r.kind]) for r in reqs]
        m = task.score(docs, reqs, answers)
        primary = task.config.primary_metric
        tasks[task.key] = {
            "primary_metric": primary,
            "primary_score": m[primary],
            "metrics": m,
            "config": {**task.config.__dict__, "chat": chat, "num_requests": len(reqs)},
        }
    return {"tasks": tasks, "suites": aggregate_suites(tasks, suites)}


def aggregate_suites(tasks: dict, suites) -> dict:
    from olmo2.eval import metrics

    out: dict[str, dict] = {}

    def score_of(k: str) -> tuple[float, int]:
        if k in tasks:
            return tasks[k]["primary_score"], tasks[k]["metrics"]["num_docs"]
        return out[k]["score"], out[k]["num_docs"]

    for s in suites:  # members come before the suites that contain them
        scores = {m: score_of(m) for m in s.members}
        docs = sum(n for _, n in scores.values())
        if s.aggregate == "mc_or_rc":
            best, val = metrics.best_of({m: v for m, (v, _) in scores.items()})
            out[s.key] = {
                "score": val,
                "aggregate": s.aggregate,
                "best": best,
                "num_docs": scores[best][1],
                "members": list(s.members),
            }
            continue
        vals = [v for v, _ in scores.values()]
        val = (
            metrics.macro_average(vals)
            if s.aggregate == "macro"
            else metrics.micro_average(vals, [n for _, n in scores.values()])
        )
        out[s.key] = {
            "score": val,
            "aggregate": s.aggregate,
            "num_docs": docs,
            "members": list(s.members),
        }
    return out


def _dump(plan, path) -> None:
    from olmo2.eval.formats import UNCOND_DOC_OFFSET
    from olmo2.utils import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for task, docs, reqs in plan:
            for r in reqs:
                doc = docs[r.doc_id % UNCOND_DOC_OFFSET] if docs else None
                row = {
                    "task": task.key,
                    "doc_id": r.doc_id,
                    "native_id": getattr(doc, "native_id", None),
                    "idx": r.idx,
                    "request_type": r.kind,
                    "context": r.context,
                }
                if r.kind == "loglikelihood":
                    row["continuation"] = r.continuation
                elif r.kind == "generate":
                    row.update({"stop": list(r.stop), "max_gen_toks": r.max_gen_toks})
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
