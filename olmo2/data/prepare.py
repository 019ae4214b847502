"""`olmo2 prepare`: documents -> filters -> decontamination -> dedup -> token files.

    olmo2 prepare --input A.jsonl.gz B.jsonl --output DIR --tokenizer dolma2.json \\
        [--no-filter c4 | --no-filter c4@code*] [--code-sources 'code*'] [--min-words 50] \\
        [--lang en] [--dedup exact,minhash,paragraph|none] [--minhash-threshold 0.8] \\
        [--decontam-dir EVAL_DIR | --no-decontam] [--decontam-mode drop|report] \\
        [--attributes-dir DIR] [--workers N] [--max-part-tokens N] [--dry-run] \\
        [--executor local|ray [--ray-address auto|HOST:PORT]] [--tasks N] [--shard-mb MB]

The driver runs these stages, each a set of tasks on the chosen executor (`executors.py`: a
local fork pool, or Ray tasks on a local Ray started for the job or on a cluster), and holds only
counts; every task reads its own shard (an input file or a byte range of a large one,
`shards.py`) or its own hash partition, and writes its outputs atomically plus a completion
marker, so a re-run after a crash skips what was finished (`stages/`):

    scan        per input file   cut points, size, SHA-256
    analyze     per shard        filters, contamination, dedup records (keys, MinHash bands,
                                 paragraphs, signatures), hash-partitioned into --tasks files
    buckets     per partition    duplicate pairs: equal keys, LSH candidates verified
    cluster     one task         union-find; the first document of each cluster in (file, line)
                                 order is kept, the others go into per-shard removal lists
    prune, paragraphs            (paragraph dedup) the same over the kept documents' paragraphs
    emit        per shard        the filter pass: drop, cut paragraphs, tokenize
    parts       per part         the token files `part-NNNNN.npy/.csv.gz`, then the manifest

No decision depends on the executor, the number of workers or tasks, or the shard size, so the
token files, indexes and manifest are byte-identical across them. Inputs and the output may be
fsspec URLs (`fs.py`); the work directory is a filesystem path every worker sees. Before any stage, the output
(and attributes) directory is checked, so an unusable path fails at once with nothing written;
a damaged input fails naming the file and line (and byte), or with --skip-bad-lines is read up
to the damage and counted (`damaged_files`). A failed run (a ValueError) leaves nothing behind.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from olmo2.data import fs
from olmo2.data.decontam import ContaminationIndex, DecontamConfig
from olmo2.data.dedup import DedupConfig, lsh_bands
from olmo2.data.documents import check_inputs
from olmo2.data.encoder import choose_backend, encoder
from olmo2.data.executors import EXECUTORS, make_executor, run_stage
from olmo2.data.filters import FILTER_NAMES, FilterConfig, FilterPipeline
from olmo2.data.shards import make_shards, scan_task
from olmo2.data.stages.analyze import analyze_shard
from olmo2.data.stages.buckets import bucket_partition
from olmo2.data.stages.cluster import cluster
from olmo2.data.stages.emit import emit_shard
from olmo2.data.stages.job import Job
from olmo2.data.stages.paragraphs import paragraph_partition, prune_shard
from olmo2.data.stages.parts import plan_parts, shard_lengths, write_part_task
from olmo2.data.tokenize import (
    STATE_FILE as TOKENIZE_STATE,
)
from olmo2.data.tokenize import (
    check_state,
    publish,
    remove_leftovers,
    tokenizer_state,
    write_manifest,
)
from olmo2.utils import data_dir, write_text_atomic

log = logging.getLogger(__name__)

DEDUP_MODES = ("exact", "minhash", "paragraph")
WORK_DIR = ".prepare-work"
RUN_ONLY = ("output", "workers", "attributes_dir", "executor", "ray_address", "tasks")
RUN_ONLY += ("shard_mb", "work_dir")
"""Settings that change where and how fast a run goes, never its documents."""


@dataclass
class PrepareConfig:
    inputs: list[str]
    output: str
    tokenizer: str
    text_field: str = "text"
    separator: str | None = None
    skip_bad_lines: bool = False
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    attributes_dir: str | None = None
    """Write `<shard>.attributes.jsonl` here: per document id, source and why it was dropped."""
    workers: int = 1
    """Local processes (1 = in-process), or the CPUs of a Ray started for the job."""
    max_part_tokens: int = 2**28
    executor: str = "local"
    ray_address: str | None = None
    """An existing Ray cluster ("auto", "HOST:PORT"); None starts one for the job."""
    tasks: int | None = None
    """Hash partitions of the dedup stages (default: `workers`)."""
    shard_mb: float = 16.0
    """JSONL files larger than this (decompressed MB) are cut into shards of about this size."""
    work_dir: str | None = None
    """Stage outputs and completion markers (default OUTPUT/.prepare-work); shared storage on
    a cluster."""


@dataclass
class Funnel:
    """Counts for the summary table and the manifest."""

    documents_in: int = 0
    bad_lines: int = 0
    damaged_files: int = 0
    """Inputs cut short by damage (truncated or corrupt), read up to it (--skip-bad-lines)."""
    bytes_in: int = 0
    filtered: collections.Counter = field(default_factory=collections.Counter)
    contaminated: collections.Counter = field(default_factory=collections.Counter)
    contaminated_docs: int = 0
    duplicates: collections.Counter = field(default_factory=collections.Counter)
    paragraphs_removed: int = 0
    documents_out: int = 0
    bytes_out: int = 0

    def add(self, result: dict) -> None:
        """Sum a task's counts into the funnel."""
        for f in dataclasses.fields(self):
            v = result.get(f.name)
            if isinstance(v, dict):
                getattr(self, f.name).update(v)
            elif v is not None:
                setattr(self, f.name, getattr(self, f.name) + v)

    def to_dict(self) -> dict:
        by_family: collections.Counter = collections.Counter()
        for reason, n in self.filtered.items():
            by_family[reason.split(":", 1)[0]] += n
        # (not dataclasses.asdict: it would rebuild the Counters from item pairs)
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["filtered"] = dict(sorted(self.filtered.items()))
        d["filtered_by_family"] = dict(sorted(by_family.items()))
        d["contaminated"] = dict(sorted(self.contaminated.items()))
        d["duplicates"] = dict(sorted(self.duplicates.items()))
        return d


# ---------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input", nargs="+", required=True, metavar="FILE", help=".jsonl[.gz|.zst] or .txt"
    )
    p.add_argument("--output", required=True, help="directory for token parts + manifest.json")
    p.add_argument("--tokenizer", required=True, help="tokenizer.json (or a directory holding one)")
    p.add_argument("--text-field", default="text", help="JSONL field with the text")
    p.add_argument("--separator", default=None, help="split .txt files into documents on this")
    p.add_argument("--skip-bad-lines", action="store_true", help="count and skip invalid lines")
    p.add_argument(
        "--no-filter",
        action="append",
        default=[],
        metavar="NAME[@SOURCE]",
        help=f"switch a filter family off ({', '.join(FILTER_NAMES)}, or 'all'); "
        "NAME@GLOB only for sources (file stems) matching GLOB",
    )
    p.add_argument(
        "--code-sources",
        action="append",
        default=[],
        metavar="GLOB",
        help="sources that are code: every text filter is skipped for them (dedup and "
        "decontamination still apply)",
    )
    p.add_argument("--min-words", type=int, default=50, help="length filter lower bound")
    p.add_argument("--max-words", type=int, default=None, help="length filter upper bound")
    p.add_argument("--lang", default="en", help="comma-separated languages to keep (py3langid)")
    p.add_argument("--lang-threshold", type=float, default=0.5, help="min language probability")
    p.add_argument(
        "--dedup",
        default="exact,minhash",
        help="comma-separated subset of exact,minhash,paragraph, or 'none'",
    )
    p.add_argument("--minhash-threshold", type=float, default=0.8)
    p.add_argument("--minhash-ngram", type=int, default=5)
    p.add_argument("--minhash-perms", type=int, default=128)
    p.add_argument("--minhash-bands", type=int, default=None, help="default: from the threshold")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--decontam-dir", default=None, help="eval directory (default: DATA_DIR/eval)")
    g.add_argument("--no-decontam", action="store_true", help="skip decontamination")
    p.add_argument("--decontam-mode", choices=("drop", "report"), default="drop")
    p.add_argument("--decontam-ngram", type=int, default=13)
    p.add_argument("--data-dir", default=None, help="shared data directory (for the eval sets)")
    p.add_argument("--attributes-dir", default=None, help="write per-document drop reasons here")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local processes, or CPUs of the Ray started for the job (default: CPU count)",
    )
    p.add_argument("--max-part-tokens", type=int, default=2**28)
    p.add_argument("--executor", choices=EXECUTORS, default="local", help="where tasks run")
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="auto|HOST:PORT",
        help="run on this Ray cluster (default: start a local Ray for the job)",
    )
    p.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="hash partitions of the dedup stages (default: workers)",
    )
    p.add_argument(
        "--shard-mb",
        type=float,
        default=16.0,
        help="cut JSONL inputs into shards of about this many decompressed MB",
    )
    p.add_argument(
        "--work-dir", default=None, help="stage files + markers (default: OUTPUT/.prepare-work)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    fc = FilterConfig()
    fc.length.min_words, fc.length.max_words = args.min_words, args.max_words
    fc.lang.langs = tuple(x.strip() for x in args.lang.split(",") if x.strip())
    fc.lang.min_score = args.lang_threshold
    for item in args.no_filter:
        name, _, glob = item.partition("@")
        names = list(FILTER_NAMES) if name == "all" else [name]
        for n in names:
            if n not in FILTER_NAMES:
                raise ValueError(
                    f"--no-filter {item}: unknown filter {n!r}; expected one of {FILTER_NAMES} or 'all'"
                )
            if glob:
                fc.disabled_for_source.setdefault(n, []).append(glob)
            else:
                getattr(fc, n).enabled = False
    for glob in args.code_sources:
        for n in FILTER_NAMES:
            fc.disabled_for_source.setdefault(n, []).append(glob)
    modes = [m.strip() for m in args.dedup.split(",") if m.strip()]
    if modes != ["none"] and (not modes or set(modes) - set(DEDUP_MODES)):
        raise ValueError(
            f"--dedup {args.dedup}: expected a comma-separated subset of {DEDUP_MODES} or 'none'"
        )
    dc = DedupConfig(
        exact="exact" in modes,
        by_url="exact" in modes,
        minhash="minhash" in modes,
        paragraph="paragraph" in modes,
        minhash_ngram=args.minhash_ngram,
        num_perm=args.minhash_perms,
        bands=args.minhash_bands,
        threshold=args.minhash_threshold,
    )
    if not 0 < dc.threshold <= 1:
        raise ValueError(f"--minhash-threshold {dc.threshold}: expected a value in (0, 1]")
    eval_dir = None
    if not args.no_decontam:
        eval_dir = args.decontam_dir
        if eval_dir is None and (d := data_dir(args.data_dir, required=False)) is not None:
            eval_dir = str(d / "eval") if (d / "eval").is_dir() else None
        if eval_dir is None:
            log.warning("no eval directory found: decontamination is off (pass --decontam-dir)")
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"--workers {workers}: expected at least 1")
    tasks = args.tasks if args.tasks is not None else workers
    if tasks < 1:
        raise ValueError(f"--tasks {tasks}: expected at least 1")
    if args.shard_mb <= 0:
        raise ValueError(f"--shard-mb {args.shard_mb}: expected a positive size")
    if args.ray_address and args.executor != "ray":
        raise ValueError("--ray-address needs --executor ray")
    return PrepareConfig(
        inputs=list(args.input),
        output=args.output,
        tokenizer=args.tokenizer,
        text_field=args.text_field,
        separator=args.separator,
        skip_bad_lines=args.skip_bad_lines,
        filters=fc,
        dedup=dc,
        decontam=DecontamConfig(
            eval_dir=eval_dir, ngram=args.decontam_ngram, mode=args.decontam_mode
        ),
        attributes_dir=args.attributes_dir,
        workers=workers,
        max_part_tokens=args.max_part_tokens,
        executor=args.executor,
        ray_address=args.ray_address,
        tasks=tasks,
        shard_mb=args.shard_mb,
        work_dir=args.work_dir,
    )


def prepare(cfg: PrepareConfig) -> dict:
    """Run every stage; return the manifest (with the funnel under `prepare`)."""
    check_inputs(cfg.inputs)
    state = tokenizer_state(cfg.tokenizer, "uint32", cfg.max_part_tokens)
    settings = _check_output(cfg)  # before reading anything: fail fast, write nothing
    out = fs.location(cfg.output)
    created = not fs.exists(out)
    job = _job(cfg, state, settings)
    try:
        with make_executor(cfg.executor, cfg.workers, cfg.ray_address) as ex:
            log.info("executor: %s; %d dedup partitions", ex.description, job.partitions)
            manifest = _run(ex, job, settings, state)
    except ValueError:  # a user error (bad input): nothing of this run is worth keeping
        shutil.rmtree(job.work, ignore_errors=True)
        if created:
            fs.remove_tree(out)
        raise
    shutil.rmtree(job.work, ignore_errors=True)
    return manifest


def _job(cfg: PrepareConfig, state: dict, settings: dict) -> Job:
    backend, why = choose_backend(state["tokenizer"])
    bands, rows = lsh_bands(cfg.dedup) if cfg.dedup.minhash else (0, 0)
    index = ContaminationIndex.build(cfg.decontam) if cfg.decontam.eval_dir else None
    out = fs.location(cfg.output)
    if cfg.work_dir:
        work = cfg.work_dir
    elif isinstance(out, Path):
        work = str(out / WORK_DIR)
    else:  # a URL output: a local work directory named after the settings (so it resumes)
        work = str(
            Path(tempfile.gettempdir()) / f"olmo2-prepare-{settings['settings_sha256'][:16]}"
        )
    job = Job(cfg, work, cfg.tasks or cfg.workers, state["tokenizer"], backend, index)
    job.bands, job.rows = bands, rows
    job.extra = {"dtype": state["dtype"], "backend_why": why}
    if cfg.executor == "local":
        # Load the language model and the encoder here once: the forked workers inherit them
        # (seconds per process and stage otherwise).
        FilterPipeline(cfg.filters)
        encoder(job.tokenizer, backend)
    return job


def _run(ex, job: Job, settings: dict, state: dict) -> dict:
    cfg, out = job.cfg, fs.location(job.cfg.output)
    _start_output(out, job, settings, state)
    timing: dict[str, float] = {}

    def stage(name, fn, specs):
        t0 = time.perf_counter()
        results = run_stage(ex, Path(job.work), name, fn, job, specs)
        timing[name] = time.perf_counter() - t0
        return results

    scans = stage("scan", scan_task, list(cfg.inputs))
    job.shards = make_shards(scans)
    funnel = Funnel()
    for r in stage("analyze", analyze_shard, job.shards):
        funnel.add(r)
    if funnel.documents_in == 0:
        raise ValueError(f"no documents in {', '.join(cfg.inputs)} (empty input)")
    partitions, shards = list(range(job.partitions)), list(range(len(job.shards)))
    if job.doc_dedup_on:
        stage("buckets", bucket_partition, partitions)
        funnel.add(stage("cluster", cluster, [0])[0])
    if cfg.dedup.paragraph:
        stage("prune", prune_shard, shards)
        stage("paragraphs", paragraph_partition, partitions)
    emitted = stage("emit", emit_shard, job.shards)
    for r in emitted:
        funnel.add({**r, "paragraphs_removed": r["paragraphs_cut"]})
    t0 = time.perf_counter()
    plan = plan_parts(shard_lengths(job), cfg.max_part_tokens)
    timing["plan"] = time.perf_counter() - t0
    parts = stage("parts", write_part_task, list(enumerate(plan)))
    extra = {
        "prepare": {
            "config": manifest_config(cfg),
            "funnel": funnel.to_dict(),
            "inputs": [{k: s[k] for k in ("path", "bytes", "sha256")} for s in scans],
            "encoder": _encoder_report(job, emitted),
        }
    }
    manifest = write_manifest(out, state, parts, extra, job.staging)
    manifest["prepare"]["timing"] = _timing(timing, ex.description)  # printed only
    return manifest


def _start_output(out, job: Job, settings: dict, state: dict) -> None:
    """Pin the settings in the output (and the work directory) before any stage runs."""
    _pin_work(Path(job.work), settings, job)
    if isinstance(out, Path):
        out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out)
    check_state(out, state)
    for name, content in ((STATE_FILE, settings), (TOKENIZE_STATE, state)):
        text = json.dumps(content, indent=2)
        publish(out, name, lambda tmp, text=text: tmp.write_text(text), job.staging)


def _timing(stages: dict[str, float], executor: str) -> dict:
    """Seconds per stage, and the summary's two phases (not in the manifest file, which stays
    reproducible)."""
    tokenize_s = stages["emit"] + stages["plan"] + stages["parts"]
    analyze_s = sum(stages.values()) - tokenize_s
    return {
        "analyze_s": analyze_s,
        "tokenize_s": tokenize_s,
        "total_s": analyze_s + tokenize_s,
        "stages_s": stages,
        "executor": executor,
    }


def _encoder_report(job: Job, emitted: list[dict]) -> dict:
    on_hf = sum(not r["tiktoken_shard"] for r in emitted if r["documents_out"])
    return {
        "backend": job.backend,
        "why": job.extra["backend_why"],
        "shards_on_tokenizers": on_hf if job.backend == "tiktoken" else len(emitted),
        "fallback_docs": sum(r["fallback_docs"] for r in emitted),
    }


def _pin_work(work: Path, settings: dict, job: Job) -> None:
    """Keep the work directory of an interrupted run only if it was made for this job."""
    pin = {
        "settings_sha256": settings["settings_sha256"],
        "partitions": job.partitions,
        "shard_mb": job.cfg.shard_mb,
    }
    f = work / "pin.json"
    if f.is_file() and json.loads(f.read_text()) != pin:
        log.info("%s: made with other --tasks/--shard-mb; starting the stages over", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_text_atomic(f, json.dumps(pin))


STATE_FILE = ".prepare-state.json"


def manifest_config(cfg: PrepareConfig) -> dict:
    """The settings that decide the documents (not where or how fast the run went)."""
    d = _jsonable(cfg)
    for k in RUN_ONLY:
        d.pop(k)
    return d


def _check_output(cfg: PrepareConfig) -> dict:
    """Refuse an output that cannot be written, or that holds another run's output; return
    the state to pin in it.

    The resume keeps every completed task's output, so without the settings check a re-run
    with, say, another filter setting would silently mix the two runs' documents.
    """
    out = fs.location(cfg.output)
    if isinstance(out, Path):
        _check_writable_dir(out, "--output")
    if cfg.attributes_dir is not None:
        _check_writable_dir(Path(cfg.attributes_dir), "--attributes-dir")
    settings = manifest_config(cfg)
    settings["input_files"] = [
        {"path": str(p), "bytes": fs.size(fs.location(p))} for p in cfg.inputs
    ]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    state = fs.join(out, STATE_FILE)
    if fs.is_file(state):
        if json.loads(fs.read_text(state)).get("settings_sha256") != digest:
            raise ValueError(
                f"{out}: holds output of `prepare` with other inputs or settings "
                f"({STATE_FILE} differs); use another --output directory or delete this one"
            )
    elif any(n.startswith("part-") for n in fs.listdir(out)):
        raise ValueError(f"{out}: already holds token parts not made by this `prepare` run")
    return {"settings_sha256": digest, **settings}


def _check_writable_dir(path: Path, flag: str) -> None:
    """Fail unless `path` is, or can be created as, a directory this process can write."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "a file, not a directory" if existing.is_file() else "not a directory"
        under = "" if existing == path else f" (so {path} cannot be created under it)"
        raise ValueError(f"{flag} {path}: {existing} is {what}{under}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {existing} is not writable by this user")


def _jsonable(cfg: PrepareConfig) -> dict:
    d = dataclasses.asdict(cfg)
    rep = d["filters"]["gopher_repetition"]
    for k in ("max_top_ngram_char_frac", "max_dup_ngram_char_frac"):
        rep[k] = {str(n): v for n, v in rep[k].items()}
    return json.loads(json.dumps(d))


def summary(manifest: dict) -> str:
    f, t = manifest["prepare"]["funnel"], manifest["prepare"].get("timing", {})
    rows = [("documents in", f["documents_in"])]
    if f["bad_lines"]:
        rows.append(("bad lines skipped", f["bad_lines"]))
    if f["damaged_files"]:
        rows.append(("damaged files (read up to the damage)", f["damaged_files"]))
    rows += [(f"  dropped: {k}", v) for k, v in f["filtered"].items()]
    rows += [(f"  contaminated: {k}", v) for k, v in f["contaminated"].items()]
    rows += [(f"  duplicates: {k}", v) for k, v in f["duplicates"].items()]
    if f["paragraphs_removed"]:
        rows.append(("  duplicate paragraphs removed", f["paragraphs_removed"]))
    rows += [("documents out", f["documents_out"]), ("tokens out", manifest["tokens"])]
    if enc := manifest["prepare"].get("encoder"):
        used = enc["backend"]
        if enc["backend"] == "tiktoken" and (enc["shards_on_tokenizers"] or enc["fallback_docs"]):
            used += (
                f" ({enc['shards_on_tokenizers']} shards, {enc['fallback_docs']} docs: tokenizers)"
            )
        rows.append(("encoder", used))
    if t:
        secs = t["total_s"]
        rows += [
            ("MB in", f"{f['bytes_in'] / 1e6:.1f}"),
            ("seconds (filter+dedup / tokenize)", f"{t['analyze_s']:.1f} / {t['tokenize_s']:.1f}"),
            ("MB/s end to end", f"{f['bytes_in'] / 1e6 / secs:.2f}"),
            ("tokens/s end to end", f"{manifest['tokens'] / secs:,.0f}"),
            ("executor", t.get("executor", "")),
        ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{width}}  {v:>12}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.dry_run:
        print(yaml.safe_dump(_jsonable(cfg), sort_keys=False), end="")
        return 0
    manifest = prepare(cfg)
    print(summary(manifest))
    print(f"wrote {len(manifest['parts'])} part(s) to {cfg.output}")
    return 0
