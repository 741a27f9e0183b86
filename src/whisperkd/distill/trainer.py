"""The distillation recipe (``whisperkd distill``): a frozen teacher teaches a smaller student. Open this first.

    loss = ce_weight * CE(student, labels) + w(step) * KD(teacher, student) + align_weight * alignment

KD is the KL at temperature T (docs/losses.md) or TAID; w(step) warms up linearly over loss.kl_warmup_steps.
Read top-down: :func:`train` outlines a run; :func:`setup` builds it (accelerator, models, data, optimizer
and schedule, teacher outputs online or from the cache, resume); :func:`train_step` is one optimizer step
(teacher outputs, student forward, loss parts, backward over train.grad_accum_steps micro-batches, clipping,
optimizer and scheduler); :func:`evaluate_dev`, :func:`checkpoint` and :func:`finish` do the rest.
A non-finite loss skips the optimizer step and is counted; train.max_consecutive_nonfinite in a row stop
the run. HF accelerate runs it (device, mixed precision, DDP, checkpoints, TensorBoard).

The pieces: models in :mod:`.build`, losses in :mod:`.losses` and :mod:`.taid`, teacher outputs in
:mod:`.teacher` (and the cache in :mod:`.cache`), dev WER in :mod:`.dev_eval`, checkpoints in
:mod:`.checkpoint`, the history in :mod:`.history`, the run folder in :mod:`.runfolder`; batch order and
resume position in :mod:`whisperkd.data.batches`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from whisperkd.config import Config, LossConfig, with_absolute_paths
from whisperkd.data.audio import DurationFilter
from whisperkd.data.batches import MemoDataset, OnceSkipLog, TrainBatches, dev_batches
from whisperkd.data.collate import WhisperCollator
from whisperkd.data.loader import SpeechDataset, utterance_lengths
from whisperkd.distill.build import Built, build_models, mixed_precision, read_splits, resolve_device
from whisperkd.distill.cache import CachedSpeechDataset, CachedTeacher, cache_dir_of
from whisperkd.distill.cache.windowed import WindowedTeacher
from whisperkd.distill.checkpoint import (latest_checkpoint, load_checkpoint, load_trainable, save_checkpoint,
                                          save_trainable_only, trainable_state)
from whisperkd.distill.dev_eval import evaluate
from whisperkd.distill.history import TB_DIR, History
from whisperkd.distill.losses import (alignment_loss, cross_entropy, kl_divergence, kl_divergence_topk,
                                      linear_warmup_weight)
from whisperkd.distill.runfolder import export_final, save_best, start_run_dir
from whisperkd.distill.taid import TAID
from whisperkd.distill.teacher import make_teacher
from whisperkd.distill.teacher_batch import TeacherBatch
from whisperkd.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    student: object  # the final student (best by dev WER when kept), a plain merged Whisper
    history: dict
    best: dict | None


def train(cfg: Config, resume: bool = False, on_eval: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Run (or, with ``resume``, continue) the distillation described by ``cfg`` in ``cfg.output.dir``.

    ``on_eval(step, record)`` is called after each dev evaluation with its history record; an exception it
    raises stops the run and comes out of here unchanged (the history and last checkpoint stay as they are).
    """
    run = setup(cfg, resume)
    run.on_eval = on_eval
    tr = run.cfg.train
    try:
        bar = tqdm(total=tr.max_steps, initial=run.state["step"], unit="step", dynamic_ncols=True,
                   disable=not (tr.progress and run.acc.is_main_process))
        if run.state["step"] == 0 and run.dev and run.cfg.eval.at_start:
            evaluate_dev(run)
        run.model.train()
        while run.state["step"] < tr.max_steps:
            record = train_step(run)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
            step = run.state["step"]
            if record["skipped"] or step % tr.log_every == 0 or step == tr.max_steps:
                run.history.log_step(record)
            if record["skipped"]:
                non_finite(run, record, bar)
            if run.dev and ((run.cfg.eval.every and step % run.cfg.eval.every == 0) or step == tr.max_steps):
                evaluate_dev(run)
            if step % run.cfg.output.checkpoint_every == 0 or step == tr.max_steps:
                checkpoint(run)
        bar.close()
        return finish(run)
    finally:
        run.history.close()


# ---------------------------------------------------------------- setup

@dataclass
class Run:
    """Everything the loop touches, built by :func:`setup` (fresh or from the last checkpoint)."""

    cfg: Config
    run_dir: Path
    acc: Accelerator
    built: Built
    teacher: object  # TeacherOutputs: online or from the cache
    batches: object  # iterator of training batches, advancing state["epoch"], state["batch"]
    dev: list
    model: torch.nn.Module  # prepared by accelerate
    trainable: list
    optimizer: object
    scheduler: object
    taid: TAID | None
    state: dict
    history: History
    best_weights: dict | None = None
    on_eval: Callable[[int, dict], None] | None = None

    @property
    def unwrapped(self):
        return self.acc.unwrap_model(self.model)


def setup(cfg: Config, resume: bool = False) -> Run:
    """Build models, data, optimizer and schedule; on ``resume`` restore the last checkpoint of cfg.output.dir."""
    run_dir = Path(cfg.output.dir)
    last = latest_checkpoint(run_dir) if resume else None
    if resume and last is None:
        raise UserError(f"{run_dir}: no checkpoint to resume from; start again with "
                        f"`whisperkd distill {run_dir / 'training_config.json'} output.overwrite=true`")
    cfg = cfg if resume else with_absolute_paths(cfg)
    acc = make_accelerator(cfg)
    set_seed(cfg.train.seed)
    built = build_models(cfg)
    train_utts, dev_utts = read_splits(cfg)
    if not resume:
        run_dir = start_run_dir(cfg)  # only now: a config that cannot even build leaves no run folder behind
    skiplog = OnceSkipLog(run_dir)
    splits = {"train": train_utts, "dev": dev_utts} if dev_utts else {"train": train_utts}
    with acc.main_process_first():  # the main process builds (or checks) the cache, the others then read it
        teacher = make_teacher(cfg, built, acc.device, splits, progress=cfg.train.progress)
    d, tr, o = cfg.data, cfg.train, cfg.optim
    collate = WhisperCollator(built.processor.tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    if isinstance(teacher, CachedTeacher | WindowedTeacher) and teacher.needs.encoder:  # no audio needed
        dataset = CachedSpeechDataset(cache_dir_of(cfg), train_utts, "train", skiplog, source="train")
    else:
        dataset = speech_dataset(cfg, train_utts, built.processor, skiplog, "train")
        dataset = MemoDataset(dataset, d.memo_size) if d.memo_size else dataset
    # A student trained for a window: a batch holds utterances of one window (their stored encoder frames).
    windows = teacher.windows if isinstance(teacher, WindowedTeacher) else (lambda utts: None)
    data = TrainBatches(dataset, collate, utterance_lengths(train_utts), tr.batch_size, tr.seed,
                        d.length_grouped, d.num_workers, acc.num_processes, acc.process_index, windows(train_utts))
    dev = dev_batches(speech_dataset(cfg, dev_utts, built.processor, skiplog, "dev"), collate, cfg.eval.batch_size,
                      d.num_workers, windows(dev_utts))
    trainable = [p for p in built.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, o.warmup_steps, tr.max_steps)
    model, optimizer, scheduler = acc.prepare(built.model, optimizer, scheduler)
    taid = TAID(total_steps=tr.max_steps, **dataclasses.asdict(cfg.loss.taid)) if (
        cfg.loss.kind == "taid" and cfg.loss.kl_weight > 0) else None
    state = {"step": 0, "epoch": 0, "batch": 0, "nonfinite": 0, "consecutive_nonfinite": 0, "best": None}
    records = best_weights = None
    if last is not None:
        state, records, best_weights = load_checkpoint(acc, model, last)
        if taid is not None:
            taid.load_state_dict(state["taid"])
    if cfg.output.tensorboard:
        acc.init_trackers(TB_DIR, init_kwargs={"tensorboard": {"purge_step": state["step"] + 1 if resume else None}})
    history = History(run_dir, records, write=acc.is_main_process, accelerator=acc)
    if resume:
        history.log_event({"step": state["step"], "event": "resumed", "checkpoint": last.name})
    return Run(cfg, run_dir, acc, built, teacher, data.iterate(state), dev, model, trainable, optimizer, scheduler,
               taid, state, history, best_weights)


def make_accelerator(cfg: Config) -> Accelerator:
    """One process or many (``accelerate launch``); checkpoints keep only the trainable weights."""
    device = resolve_device(cfg.train.device, "train.device")
    if device.type == "cpu" and cfg.train.mixed_precision in ("bf16", "fp16"):
        logger.warning("train.mixed_precision=%s is for CUDA; training in fp32 on CPU", cfg.train.mixed_precision)
    acc = Accelerator(cpu=device.type == "cpu", mixed_precision=mixed_precision(cfg.train.mixed_precision, device),
                      step_scheduler_with_optimizer=False,  # one schedule step per optimizer step, any process count
                      log_with="tensorboard" if cfg.output.tensorboard else None, project_dir=cfg.output.dir)
    acc.register_save_state_pre_hook(save_trainable_only)
    return acc


def speech_dataset(cfg: Config, utterances, processor, skiplog, source: str) -> SpeechDataset:
    d = cfg.data
    return SpeechDataset(utterances, processor, skiplog, DurationFilter(d.min_seconds, d.max_seconds), source=source,
                         max_label_tokens=d.max_label_tokens)


# ---------------------------------------------------------------- one step

def loss_parts(model, batch: dict, teacher: TeacherBatch, cfg: LossConfig, align_pairs, step: int | None = None,
               taid: TAID | None = None) -> dict[str, torch.Tensor]:
    """The loss and its parts for one batch. ``step=None`` is evaluation: full KD weight, KL at T (no TAID)."""
    device = next(model.parameters()).device
    labels = batch["labels"].to(device)
    encoder = teacher.encoder_hidden_states
    logits, hidden = model(input_features=None if encoder is not None else batch["input_features"].to(device),
                           decoder_input_ids=batch["decoder_input_ids"].to(device),
                           decoder_attention_mask=batch["decoder_attention_mask"].to(device),
                           encoder_hidden_states=encoder, align_layers=[j for j, _ in align_pairs])
    parts = {"ce": cross_entropy(logits, labels)}
    loss = cfg.ce_weight * parts["ce"]
    if cfg.kl_weight > 0:
        if taid is not None and step is not None:
            name, kd = "taid", taid.loss(teacher.logits, logits, labels)
        elif teacher.logits is not None:
            name, kd = "kl", kl_divergence(teacher.logits, logits, labels, cfg.temperature)
        else:
            if teacher.topk_temperature is not None and abs(teacher.topk_temperature - cfg.temperature) > 1e-9:
                raise UserError(f"teacher cache: top-k log-probs at T={teacher.topk_temperature}, training at "
                                f"loss.temperature={cfg.temperature}; rebuild the cache or change the temperature")
            name, kd = "kl", kl_divergence_topk(teacher.topk_logprobs, teacher.topk_indices, logits, labels,
                                                cfg.temperature)
        weight = cfg.kl_weight if step is None else linear_warmup_weight(step, cfg.kl_weight, cfg.kl_warmup_steps)
        parts[name] = kd
        loss = loss + weight * kd
    if align_pairs:
        parts["align"] = torch.stack([alignment_loss(h, teacher.hidden_states[t], labels, cfg.align_kind)
                                      for h, (_, t) in zip(hidden, align_pairs)]).mean()
        loss = loss + cfg.align_weight * parts["align"]
    parts["loss"] = loss
    return parts


def train_step(run: Run) -> dict:
    """One optimizer step over train.grad_accum_steps micro-batches; returns the step's history record.

    Gradient accumulation is this loop alone: each micro-batch's loss is divided by their number, and the
    gradients of multi-process training are synchronised on the last one only (``acc.no_sync`` before it).
    """
    cfg, acc, state, model, optimizer = run.cfg, run.acc, run.state, run.model, run.optimizer
    step, n = state["step"], cfg.train.grad_accum_steps
    sums: dict[str, float] = {}
    for micro in range(n):
        batch = next(run.batches)
        with nullcontext() if micro == n - 1 else acc.no_sync(model):
            parts = loss_parts(model, batch, run.teacher(batch), cfg.loss, run.built.align_pairs, step=step,
                               taid=run.taid)
            acc.backward(parts["loss"] / n)
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach()) / n
    lr = optimizer.param_groups[0]["lr"]
    finite = all_finite(acc, sums["loss"])
    grad_norm = float(acc.clip_grad_norm_(run.trainable, cfg.optim.grad_clip or math.inf)) if finite else math.nan
    skipped = not finite or (acc.scaler is None and not math.isfinite(grad_norm))
    if not skipped:
        optimizer.step()
        if not optimizer.step_was_skipped:  # an fp16 overflow step leaves the schedule where it is
            run.scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if run.taid is not None:
        run.taid.update(step, sums["taid"])
        state["taid"] = run.taid.state_dict()
    state["nonfinite"] += int(skipped)
    state["consecutive_nonfinite"] = state["consecutive_nonfinite"] + 1 if skipped else 0
    state["step"] = step + 1
    return {"step": state["step"], "epoch": state["epoch"], **sums, "lr": lr, "grad_norm": grad_norm,
            "kl_weight": linear_warmup_weight(step, cfg.loss.kl_weight, cfg.loss.kl_warmup_steps),
            "skipped": skipped, **({"t": run.taid.t} if run.taid is not None else {})}


def all_finite(acc: Accelerator, value: float) -> bool:
    """Whether the loss is finite on every process."""
    if acc.num_processes == 1:
        return math.isfinite(value)
    bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], device=acc.device)
    return float(acc.reduce(bad, "sum")) == 0.0


def non_finite(run: Run, record: dict, bar) -> None:
    """Record a skipped step; stop the run after train.max_consecutive_nonfinite of them in a row."""
    state, limit = run.state, run.cfg.train.max_consecutive_nonfinite
    run.history.log_event({"step": state["step"], "event": "non_finite_loss", "loss": record["loss"],
                           "grad_norm": record["grad_norm"], "in_a_row": state["consecutive_nonfinite"]})
    logger.warning("step %d: non-finite loss or gradient, optimizer step skipped (%d in a row, %d in all)",
                   state["step"], state["consecutive_nonfinite"], state["nonfinite"])
    if state["consecutive_nonfinite"] >= limit:
        bar.close()
        first = state["step"] - limit + 1
        raise UserError(f"stopped at step {state['step']}: {limit} non-finite losses in a row (steps "
                        f"{first}-{state['step']}, {state['nonfinite']} in all); last checkpoint: "
                        f"{latest_checkpoint(run.run_dir) or 'none'}; lower optim.lr, use bf16 rather than fp16, "
                        "or check the data for NaN/inf features")


# ---------------------------------------------------------------- evaluation, checkpoints, the end

def evaluate_dev(run: Run) -> dict:
    """Dev loss and WER now; keeps the best student's weights (memory, best/, next checkpoint)."""
    cfg, state = run.cfg, run.state

    def dev_loss(model, batch, teacher_batch):
        return loss_parts(model, batch, teacher_batch, cfg.loss, run.built.align_pairs)

    result = evaluate(run.unwrapped, run.teacher, run.dev, run.built.processor, dev_loss, cfg.eval.wer,
                      run.acc.autocast)
    metric = result["wer"] if cfg.eval.wer else result["dev_loss"]
    best = state["best"]
    result.update(step=state["step"], best=math.isfinite(metric) and (best is None or metric < best["metric"]))
    if result["best"] and cfg.eval.keep_best:
        state["best"] = {"step": state["step"], "metric": metric, "kind": "wer" if cfg.eval.wer else "dev_loss"}
        run.best_weights = trainable_state(run.unwrapped, copy=True)
        if run.acc.is_main_process:
            save_best(run.run_dir, run.best_weights, state["best"])
    run.history.log_eval(result)
    wer = f", WER {100 * result['wer']:.1f}%" if cfg.eval.wer else ""
    logger.info("step %d: dev loss %.4f%s", state["step"], result["dev_loss"], wer)
    run.model.train()
    if run.on_eval is not None:
        run.on_eval(state["step"], result)  # may raise (e.g. optuna.TrialPruned) to stop the run
    return result


def checkpoint(run: Run) -> None:
    if run.acc.is_main_process:
        save_checkpoint(run.acc, run.run_dir, run.state["step"], run.state, run.history.data,
                        run.cfg.output.keep_checkpoints, best=run.best_weights)
    run.acc.wait_for_everyone()


def finish(run: Run) -> TrainResult:
    """Load the best student (when kept) and write adapter_final/ and student_final/."""
    run.history.close()
    best = run.state["best"] if run.cfg.eval.keep_best and run.best_weights is not None else None
    student = None
    if best is not None:
        load_trainable(run.unwrapped, run.best_weights)
    if run.acc.is_main_process:
        if best is not None:
            save_best(run.run_dir, run.best_weights, best)  # best/ again: a crashed run may have left a later one
        info = {"teacher": run.cfg.teacher.model, "student_config": dataclasses.asdict(run.cfg.student),
                "steps": run.state["step"], "final": "best" if best else "last", "best": best}
        student = export_final(run.run_dir, run.unwrapped, run.built.processor, run.built.uses_lora, info)
    return TrainResult(run.run_dir, student, run.history.data, best)
