"""The model card (``README.md``) of an export: what the model is, how it was trained, what was measured, how the
export was verified and how to use it. Built from the export report (:mod:`whisperkd.deploy.export`), the run's
``training_config.json`` and, when ``whisperkd evaluate`` has written it, the run's ``report/metrics.json``."""

from __future__ import annotations

from pathlib import Path

from whisperkd.errors import UserError
from whisperkd.evaluate.runner import read_metrics
from whisperkd.evaluate.tables import results_table
from whisperkd.models.run_folder import CONFIG_FILE, config_section, read_run_config
from whisperkd.models.window import Window

METRICS = Path("report") / "metrics.json"


def _window(raw: dict | None) -> str:
    return Window(**raw).describe() if raw else "30 s (Whisper's own)"


def _front_matter(fmt: str) -> str:
    library = "transformers" if fmt == "hf" else "ctranslate2"
    return (f"---\nlibrary_name: {library}\npipeline_tag: automatic-speech-recognition\nlanguage:\n- en\n"
            f"tags:\n- whisper\n- whisperkd\n- knowledge-distillation\n---\n")


def _output_layer(fmt: str, choice: str) -> str:
    if fmt == "ct2":
        return f"- output layer: {choice}, as every layer (CTranslate2 quantises them all)"
    if choice == "int8":
        return "- output layer: int8 when whisperkd loads the model on CPU (stored in float32)"
    return f"- output layer: {choice}"


def _model_section(report: dict, config: dict) -> list[str]:
    m, src = report["model"], report["source"]
    teacher = config_section(config, "teacher").get("model")
    what = {"run": f"the student of the run folder `{src['run']}`", "hf": f"the HF Whisper directory `{src['spec']}`",
            "name": f"Whisper `{src['spec']}`"}[src["kind"]]
    lines = ["## The model", "",
             f"- exported from {what}" + (f", distilled from the teacher `{teacher}`" if teacher else ""),
             f"- {m['encoder_layers']} encoder layers, {m['decoder_layers']} decoder layers, d_model {m['d_model']}, "
             f"{m['parameters'] / 1e6:.2f} M parameters; {'multilingual' if m['multilingual'] else 'English-only'} "
             f"vocabulary ({m['vocab_size']} tokens); transcribes English",
             f"- encoder window: {_window(m['window'])}"
             + (" (the window it was trained for; `whisperkd transcribe` and `whisperkd evaluate` use it)"
                if m["window"] else ""),
             _output_layer(report["export"]["format"], m["output_layer"]),
             f"- format: {report['export']['format']}, weights {report['export']['quantization']}", ""]
    return lines


def _layers(value) -> str:
    """A config's layer choice: null keeps the teacher's layers, a count or a list of teacher layer indices."""
    return "all of the teacher's" if value is None else str(value)


def _training_section(config: dict, run: Path | None) -> list[str]:
    lines = ["## Training set-up", ""]
    if not config:
        return lines + [f"Not a whisperkd run folder (no {CONFIG_FILE}): no training set-up to report.", ""]
    s, lora, loss = config_section(config, "student"), config_section(config, "lora"), config_section(config, "loss")
    data, train = config_section(config, "data"), config_section(config, "train")
    optim = config_section(config, "optim")
    encoder = s.get("encoder_layers")
    window = s.get("encoder_window")
    if lora.get("enabled"):
        how = f"LoRA ({', '.join(lora.get('presets', []))}, rank {lora.get('rank')}, alpha {lora.get('alpha')}), merged"
    else:
        trained = [part for part in ("encoder", "decoder", "embeddings") if s.get(f"train_{part}")]
        how = "full fine-tuning of the " + (", ".join(trained) or "nothing")
    losses = [f"cross-entropy × {loss.get('ce_weight')}",
              f"{loss.get('kind', 'kl').upper()} × {loss.get('kl_weight')}"
              + (f" at temperature {loss.get('temperature')}" if loss.get("kind", "kl") == "kl" else "")]
    if loss.get("align_weight"):
        losses.append(f"{loss.get('align_kind')} hidden-state alignment × {loss.get('align_weight')}")
    dev = data.get("dev") or f"{data.get('dev_fraction')} of the training speakers held out"
    lines += [f"From `{run / CONFIG_FILE}`:", "",
              f"- student: initialised from `{s.get('init', 'teacher')}`, decoder layers "
              f"{_layers(s.get('decoder_layers'))}, encoder layers {_layers(encoder)}; {how}",
              "- encoder window in training: " + ("30 s" if window is None else
                                                   f"{window} (step {s.get('window_step')} s, margin "
                                                   f"{s.get('window_margin')} s)"),
              f"- losses: {', '.join(losses)}",
              f"- data: train `{data.get('train') or 'none given'}`, dev `{dev}`, labels: "
              f"{data.get('labels', 'text')}, augmented copies: {config_section(data, 'augment').get('copies', 0)}",
              f"- {train.get('max_steps')} steps of batch {train.get('batch_size')} × "
              f"{train.get('grad_accum_steps', 1)}, learning rate {optim.get('lr')}, seed {train.get('seed')}", ""]
    return lines


def _metrics_section(run: Path | None) -> list[str]:
    lines = ["## Measured accuracy and speed", ""]
    if run is None:
        return lines + ["None measured: not a run folder.", ""]
    if not (run / METRICS).is_file():
        return lines + [f"None measured: no `{run / METRICS}` (`whisperkd evaluate TEACHER {run} --data SET` "
                        f"writes it).", ""]
    try:
        metrics = read_metrics(run / METRICS)
    except UserError as err:
        return lines + [f"None readable: {err}", ""]
    machine = metrics.get("machine", {})
    settings = metrics.get("settings", {})
    lines += [f"`whisperkd evaluate` of the run (`{run / METRICS}`, {metrics.get('created')}), on "
              f"{machine.get('cpu')} ({machine.get('usable_cpus')} usable CPUs, {settings.get('device')}), batch "
              f"size {settings.get('batch_size')}, {settings.get('decoding')}. These are the source model's figures "
              f"in whisperkd's torch engine, not this export's.", ""]
    for label in dict.fromkeys(r["set"] for r in metrics.get("results", [])):
        lines += [f"**{label}**", "", results_table(metrics, label)]
    return lines


def _verification_section(report: dict) -> list[str]:
    v = report.get("verification")
    lines = ["## Verification of this export", ""]
    if not v:
        return lines + ["Not verified (exported with `--verify-clips none`).", ""]
    lines += [f"Greedy transcripts of the source and of this export on {v['utterances']} clips of `{v['clips']}` "
              f"(source window {v['source_window']}, export window {v['export_window']}).", "",
              f"- rule: {v['rule']}",
              f"- identical transcripts: {v['identical']} of {v['utterances']}",
              f"- WER against the clips' texts: source {100 * v['source_wer']:.2f} %, export "
              f"{100 * v['export_wer']:.2f} % ({100 * v['wer_difference']:+.2f} points)",
              f"- result: {'passed' if v['passed'] else 'FAILED'}", ""]
    differing = [r for r in v["per_clip"] if not r["identical"]]
    if differing:
        lines += ["| clip | source | export |", "|---|---|---|"]
        lines += [f"| {r['id']} | {r['source']} | {r['export']} |" for r in differing[:10]]
        lines.append("")
    return lines


def _usage_section(fmt: str) -> list[str]:
    lines = ["## Use", "", "With whisperkd (greedy, with the stored encoder window):", "", "```sh",
             "whisperkd transcribe THIS_FOLDER recording.wav", "```", ""]
    if fmt == "ct2":
        lines += ["With faster-whisper (which pads every window to 30 s; the stored window is whisperkd's):", "",
                  "```python", "from faster_whisper import WhisperModel", "",
                  'model = WhisperModel("THIS_FOLDER", device="cpu", compute_type="int8")',
                  'segments, info = model.transcribe("recording.wav", language="en", beam_size=1)',
                  'print(" ".join(segment.text.strip() for segment in segments))', "```", ""]
    else:
        lines += ["With transformers (30-s windows, float32 output layer; `num_beams=1` decodes greedily as whisperkd "
                  "does, the pipeline's default is 5 beams):", "", "```python",
                  "import soundfile as sf", "from transformers import pipeline", "",
                  'asr = pipeline("automatic-speech-recognition", model="THIS_FOLDER")',
                  'audio, rate = sf.read("recording.wav", dtype="float32")  # 16 kHz mono',
                  'print(asr({"raw": audio, "sampling_rate": rate}, generate_kwargs={"num_beams": 1})["text"])', "```",
                  ""]
    return lines


def model_card(report: dict, run: Path | None) -> str:
    """The README.md of an export described by ``report`` (see :func:`whisperkd.deploy.export.export_model`);
    ``run``: the run folder of the source, or None."""
    config = read_run_config(run) if run is not None else {}
    fmt = report["export"]["format"]
    title = f"{run.name}: a whisperkd student" if run is not None else f"Whisper {Path(report['source']['spec']).name}"
    lines = [_front_matter(fmt), f"# {title} ({'Hugging Face' if fmt == 'hf' else 'CTranslate2'}, "
                                 f"{report['export']['quantization']})", "",
             f"Exported by `whisperkd export` on {report['created']}; `whisperkd_export.json` holds the figures below.",
             ""]
    lines += _model_section(report, config)
    lines += _training_section(config, run)
    lines += _metrics_section(run)
    lines += _verification_section(report)
    lines += _usage_section(fmt)
    return "\n".join(lines).rstrip() + "\n"
