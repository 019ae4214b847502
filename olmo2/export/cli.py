"""`olmo2 export hf|gguf`: hand a checkpoint to other tools (`olmo2.export.hf`,
`olmo2.export.gguf`). Both write atomically: a failure leaves no partial output."""

from __future__ import annotations

from pathlib import Path

from olmo2.export.hf import HF_DTYPES, check_output, export_hf


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    hf = sub.add_parser("hf", help="a clean Hugging Face checkpoint directory")
    hf.add_argument("--model", required=True, help="checkpoint directory or hub id")
    hf.add_argument("--output", required=True, help="directory to create")
    hf.add_argument("--dtype", default="float32", choices=list(HF_DTYPES))
    hf.add_argument("--max-shard-size", default=None, help="e.g. 2GB: split the safetensors")
    hf.add_argument("--force", action="store_true", help="replace an existing output")
    gg = sub.add_parser("gguf", help="a GGUF file for llama.cpp")
    gg.add_argument("--model", required=True, help="checkpoint directory")
    gg.add_argument("--output", required=True, help="FILE.gguf")
    gg.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16", "q8_0"])
    gg.add_argument("--pre", default=None, help="llama.cpp pre-tokenizer name (auto-detected)")
    gg.add_argument("--force", action="store_true", help="replace an existing output")


def run(args) -> int:
    output = Path(args.output)
    if args.format == "hf":
        path = export_hf(args.model, output, args.dtype, args.max_shard_size, args.force)
        files = sorted(f.name for f in path.iterdir())
        print(f"exported {args.model} -> {path} ({args.dtype}): {', '.join(files)}")
        return 0
    from olmo2.export.gguf import export_gguf

    check_output(output, args.force)
    path = export_gguf(args.model, output, args.dtype, args.pre)
    print(f"exported {args.model} -> {path} ({args.dtype}, {path.stat().st_size / 1e6:.1f} MB)")
    return 0
