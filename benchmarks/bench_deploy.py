"""The student where users run Whisper: HF, CTranslate2 (faster-whisper) and speculative decoding, in one process.

    python benchmarks/bench_deploy.py --workdir runs/demo/full [--student RUN] [--limit 50] [--repeats 1]

Models, loaded into one process and taking turns batch by batch (:func:`whisperkd.evaluate.runner.evaluate_models`):

- the teacher as shipped: HF ``generate``, float32, the 30-s encoder window, greedy;
- the teacher in faster-whisper, int8, as faster-whisper users run it: ``WhisperModel(DIR, compute_type="int8")``
  on the teacher's CTranslate2 directory and ``model.transcribe(audio, language="en")`` one file at a time, once
  with its default beam search (``beam_size=5``, temperature fallback, conditioning on previous text) and once
  greedy (``beam_size=1``);
- the student in HF float32 as saved (its stored encoder window and output layer);
- the student exported to CTranslate2 int8 with ``whisperkd export RUN --format ct2`` (its encoder window stored
  in the export, run by ctranslate2 directly, batched);
- speculative decoding: the teacher with the student as its draft model (``whisperkd transcribe --assistant``),
  batch size 1 by construction (a batch of 8 is decoded one utterance after another).

Sets: the demo's held-out synthetic voices, the real dev subset (speechocean762) and the six real clips. Printed:
WER per set, latency p50 at batch 1 and RTF at batch 8 over all sets, speed-ups over the HF teacher and over
faster-whisper int8 (greedy and default), memory (RSS at load + working RSS). Figures in docs/deploy.md come from here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from whisperkd.cli import quiet_libraries, show_progress
from whisperkd.demo_settings import REAL_SPEECH
from whisperkd.deploy.speculative import open_speculative
from whisperkd.evaluate.engines import ct2_parameter_count, open_model
from whisperkd.evaluate.memory import directory_size
from whisperkd.evaluate.runner import evaluate_models
from whisperkd.evaluate.tables import overall_speed
from whisperkd.models.fetch import ct2_dir_of


class FasterWhisper:
    """faster-whisper's own ``WhisperModel.transcribe``, one file at a time, as its users call it."""

    kind = "faster-whisper"
    trainable_parameters = None

    def __init__(self, path: Path, compute_type: str = "int8", beam_size: int = 5):
        from faster_whisper import WhisperModel  # optional extra `deploy`

        self.model = WhisperModel(str(path), device="cpu", compute_type=compute_type,
                                  cpu_threads=torch.get_num_threads())
        self.beam_size = beam_size
        self.path, self.device, self.dtype = path, "cpu", compute_type
        self.parameters = ct2_parameter_count(path / "model.bin")
        self.disk_bytes = directory_size(path)

    def transcribe(self, audios: list) -> list[str]:
        texts = []
        for audio in audios:
            segments, _ = self.model.transcribe(audio, language="en", beam_size=self.beam_size)
            texts.append(" ".join(s.text.strip() for s in segments).strip())
        return texts


def export_ct2(run: Path, out: Path) -> Path:
    """The student exported to CTranslate2 int8 by the command users run (reused when already there)."""
    if not (out / "model.bin").is_file():
        subprocess.run([str(Path(sys.executable).with_name("whisperkd")), "export", str(run), "--format", "ct2",
                        "--quantization", "int8", "--out", str(out), "--force"], check=True)
    return out


def table(metrics: dict, references: tuple[str, ...]) -> str:
    sets = [s["label"] for s in metrics["sets"]]
    speed = overall_speed(metrics)
    head = ["model"] + [f"WER {s}" for s in sets] + ["latency p50, batch 1", "RTF, batch 8"] + \
        [f"speed-up vs {r} (b1 / b8)" for r in references] + ["RSS load + working MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in metrics["models"]:
        label = model["label"]
        res = {r["set"]: r for r in metrics["results"] if r["model"] == label}
        rtf, latency = speed[label]
        ups = []
        for ref in references:
            ref_rtf, ref_latency = speed[ref]
            b1 = "n/a" if latency is None or ref_latency is None else f"{ref_latency / latency:.2f}x"
            ups.append(f"{b1} / {ref_rtf / rtf:.2f}x")
        work = max((r["memory"].get("rss_peak_extra_bytes") or 0) for r in res.values())
        rss = (model.get("rss_load_bytes") or 0) + work
        row = [label] + [f"{100 * res[s]['wer']:.1f} %" for s in sets] + \
            ["n/a" if latency is None else f"{1000 * latency:.0f} ms", f"{rtf:.3f}"] + ups + [f"{rss / 2**20:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo/full"), help="a finished full demo's folder")
    parser.add_argument("--student", type=Path, default=None, help="the student's run folder (default WORKDIR/run)")
    parser.add_argument("--real-speech", type=Path, default=REAL_SPEECH)
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per set and latency repeats")
    parser.add_argument("--limit", type=int, default=None, help="only the first N utterances of each set")
    parser.add_argument("--no-speculative", action="store_true", help="leave speculative decoding out")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default WORKDIR/deploy-report)")
    args = parser.parse_args(argv)
    quiet_libraries()
    show_progress()
    run = args.student or args.workdir / "run"
    out = args.out or args.workdir / "deploy-report"
    teacher = json.loads((run / "training_config.json").read_text())["teacher"]["model"]
    teacher_ct2 = ct2_dir_of(teacher)
    if not (teacher_ct2 / "model.bin").is_file():
        print(f"{teacher_ct2}: the teacher's CTranslate2 directory is missing (whisperkd models fetch {teacher})",
              file=sys.stderr)
        return 2
    student_ct2 = export_ct2(run, out / "student-ct2-int8")
    fw_default, fw_greedy = "faster-whisper int8, beam 5 (default)", "faster-whisper int8, greedy"
    hf_teacher = f"teacher ({teacher}), HF float32"
    models = [
        (hf_teacher, lambda: open_model(teacher)),
        (fw_default, lambda: FasterWhisper(teacher_ct2, "int8", beam_size=5)),
        (fw_greedy, lambda: FasterWhisper(teacher_ct2, "int8", beam_size=1)),
        ("student, HF float32 as saved", lambda: open_model(str(run))),
        ("student, CT2 int8 export", lambda: open_model(str(student_ct2))),
    ]
    if not args.no_speculative:
        models.append((f"speculative ({teacher} + student)", lambda: open_speculative(teacher, str(run))))
    corpus = args.workdir / "corpus"
    sets = [str(corpus / "test" / "manifest.jsonl"), str(corpus / "real-dev" / "manifest.jsonl"), str(args.real_speech)]
    metrics = evaluate_models(models, sets, out, batch_size=8, repeats=args.repeats, latency=True, limit=args.limit)
    text = table(metrics, (hf_teacher, fw_greedy, fw_default))
    (out / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
