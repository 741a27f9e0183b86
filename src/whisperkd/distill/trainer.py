"""The distillation loop (``whisperkd distill``): a frozen teacher teaches a smaller student.

    loss = ce_weight * CE(student, labels) + w(step) * KD(teacher, student) + align_weight * alignment

KD is the KL at temperature T (docs/losses.md) or TAID; w(step) warms up linearly over loss.kl_warmup_steps.
HF accelerate runs it (device, mixed precision, gradient accumulation, DDP); AdamW with a linear warm-up then
cosine decay; gradient clipping; a non-finite loss skips the optimizer step and is counted, and
train.max_consecutive_nonfinite of them in a row stop the run. Teacher outputs come through one interface
(``TeacherOutputs``), so an offline teacher cache can replace :class:`OnlineTeacher`.
The IO (checkpoints, history, run folder, dev evaluation) lives in the sibling modules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from whisperkd.config import Config, LossConfig, with_absolute_paths
from whisperkd.distill.build import (OnceSkipLog, TrainBatches, build_models, dev_batches, mixed_precision,
                                     read_splits, resolve_device)
from whisperkd.distill.cache import make_teacher
from whisperkd.distill.checkpoint import (latest_checkpoint, load_checkpoint, load_trainable, save_checkpoint,
                                          trainable_state)
from whisperkd.distill.dev_eval import evaluate
from whisperkd.distill.history import History
from whisperkd.distill.losses import alignment_loss, cross_entropy, kl_divergence, kl_divergence_topk, \
    linear_warmup_weight
from whisperkd.distill.runfolder import export_final, save_best, start_run_dir
from whisperkd.distill.taid import TAID
from whisperkd.distill.teacher import TeacherBatch
from whisperkd.errors import UserError


@dataclass
class TrainResult:
    run_dir: Path
    student: object  # the final student (best by dev WER when kept), a plain merged Whisper
    history: dict
    best: dict | None


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


def make_accelerator(cfg: Config):
    from accelerate import Accelerator

    device = resolve_device(cfg.train.device, "train.device")
    precision = mixed_precision(cfg.train.mixed_precision, device)
    if device.type == "cpu" and cfg.train.mixed_precision in ("bf16", "fp16"):
        tqdm.write(f"note: train.mixed_precision={cfg.train.mixed_precision} is for CUDA; training in fp32 on CPU")
    return Accelerator(cpu=device.type == "cpu", mixed_precision=precision,
                       gradient_accumulation_steps=cfg.train.grad_accum_steps)


def _all_finite(acc, value: float) -> bool:
    if acc.num_processes == 1:
        return math.isfinite(value)
    bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], device=acc.device)
    return float(acc.reduce(bad, "sum")) == 0.0


def _stop_message(state: dict, limit: int, checkpoint) -> str:
    first = state["step"] - limit + 1
    return (f"stopped at step {state['step']}: {limit} non-finite losses in a row (steps {first}-{state['step']}, "
            f"{state['nonfinite']} in all); last checkpoint: {checkpoint or 'none'}; lower optim.lr, use bf16 "
            "rather than fp16, or check the data for NaN/inf features")


@dataclass
class Run:
    """Everything the loop touches, built by :func:`setup` (fresh or from the last checkpoint)."""

    cfg: Config
    run_dir: Path
    acc: object  # accelerate.Accelerator
    built: object  # build.Built
    teacher: object  # TeacherOutputs
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
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    run_dir = Path(cfg.output.dir)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
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
    data = TrainBatches(cfg, train_utts, built.processor, skiplog, acc.num_processes, acc.process_index)
    dev = dev_batches(cfg, dev_utts, built.processor, skiplog)
    o, tr = cfg.optim, cfg.train
    trainable = [p for p in built.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, o.warmup_steps, tr.max_steps)
    model, optimizer = acc.prepare(built.model, optimizer)
    taid = TAID(total_steps=tr.max_steps, **dataclasses.asdict(cfg.loss.taid)) if (
        cfg.loss.kind == "taid" and cfg.loss.kl_weight > 0) else None
    state = {"step": 0, "epoch": 0, "batch": 0, "nonfinite": 0, "consecutive_nonfinite": 0, "best": None}
    records = best_weights = None
    if checkpoint is not None:
        state, records, best_weights = load_checkpoint(checkpoint, acc.unwrap_model(model), optimizer, scheduler,
                                                       acc.scaler)
        if taid is not None:
            taid.load_state_dict(state["taid"])
    history = History(run_dir, cfg.output.tensorboard, records, purge_step=state["step"] + 1 if resume else None,
                      write=acc.is_main_process)
    if resume:
        history.log_event({"step": state["step"], "event": "resumed", "checkpoint": checkpoint.name})
    splits = {"train": train_utts, "dev": dev_utts} if dev_utts else {"train": train_utts}
    with acc.main_process_first():  # the main process builds (or checks) the cache, the others then read it
        teacher = make_teacher(cfg, built, acc.device, splits, progress=cfg.train.progress)
    return Run(cfg, run_dir, acc, built, teacher, data.iterate(state), dev, model, trainable, optimizer, scheduler,
               taid, state, history, best_weights)


def evaluate_dev(run: Run) -> dict:
    """Dev loss and WER now; keeps the best student's weights (memory, best/, next checkpoint)."""
    cfg, state = run.cfg, run.state
    dev_loss = partial(loss_parts, cfg=cfg.loss, align_pairs=run.built.align_pairs)
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
    tqdm.write(f"step {state['step']}: dev loss {result['dev_loss']:.4f}{wer}")
    run.model.train()
    if run.on_eval is not None:
        run.on_eval(state["step"], result)  # may raise (e.g. optuna.TrialPruned) to stop the run
    return result


def checkpoint(run: Run) -> None:
    if run.acc.is_main_process:
        save_checkpoint(run.run_dir, run.state["step"], run.unwrapped, run.optimizer, run.scheduler, run.acc.scaler,
                        run.state, run.history.data, run.cfg.output.keep_checkpoints, best=run.best_weights)
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


def train(cfg: Config, resume: bool = False, on_eval: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Run (or, with ``resume``, continue) the distillation described by ``cfg`` in ``cfg.output.dir``.

    ``on_eval(step, record)`` is called after each dev evaluation with its history record; an exception it
    raises stops the run and comes out of here unchanged (the history and last checkpoint stay as they are).
    """
    run = setup(cfg, resume)
    run.on_eval = on_eval
    try:
        return _loop(run)
    finally:
        run.history.close()


def _loop(run: Run) -> TrainResult:
    cfg, acc, state, history, model, optimizer = run.cfg, run.acc, run.state, run.history, run.model, run.optimizer
    o, tr = cfg.optim, cfg.train
    step_loss = partial(loss_parts, cfg=cfg.loss, align_pairs=run.built.align_pairs, taid=run.taid)
    bar = tqdm(total=tr.max_steps, initial=state["step"], unit="step", dynamic_ncols=True,
               disable=not (tr.progress and acc.is_main_process))
    if state["step"] == 0 and run.dev and cfg.eval.at_start:
        evaluate_dev(run)
    model.train()
    while state["step"] < tr.max_steps:
        step = state["step"]
        sums: dict[str, float] = {}
        for _ in range(tr.grad_accum_steps):
            batch = next(run.batches)
            with acc.accumulate(model):
                parts = step_loss(model, batch, run.teacher(batch), step=step)
                acc.backward(parts["loss"])
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) / tr.grad_accum_steps
        lr = optimizer.param_groups[0]["lr"]
        finite = _all_finite(acc, sums["loss"])
        grad_norm = float(acc.clip_grad_norm_(run.trainable, o.grad_clip or math.inf)) if finite else math.nan
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
        bar.update(1)
        bar.set_postfix(loss=f"{sums['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
        if skipped or state["step"] % tr.log_every == 0 or state["step"] == tr.max_steps:
            history.log_step({"step": state["step"], "epoch": state["epoch"], **sums, "lr": lr, "grad_norm": grad_norm,
                              "kl_weight": linear_warmup_weight(step, cfg.loss.kl_weight, cfg.loss.kl_warmup_steps),
                              "skipped": skipped, **({"t": run.taid.t} if run.taid is not None else {})})
        if skipped:
            _non_finite(run, sums["loss"], grad_norm, bar)
        if run.dev and ((cfg.eval.every and state["step"] % cfg.eval.every == 0) or state["step"] == tr.max_steps):
            evaluate_dev(run)
        if state["step"] % cfg.output.checkpoint_every == 0 or state["step"] == tr.max_steps:
            checkpoint(run)
    bar.close()
    return finish(run)


def _non_finite(run: Run, loss: float, grad_norm: float, bar) -> None:
    """Record a skipped step; stop the run after train.max_consecutive_nonfinite of them in a row."""
    state, limit = run.state, run.cfg.train.max_consecutive_nonfinite
    run.history.log_event({"step": state["step"], "event": "non_finite_loss", "loss": loss, "grad_norm": grad_norm,
                           "in_a_row": state["consecutive_nonfinite"]})
    tqdm.write(f"step {state['step']}: non-finite loss or gradient, optimizer step skipped "
               f"({state['consecutive_nonfinite']} in a row, {state['nonfinite']} in all)")
    if state["consecutive_nonfinite"] >= limit:
        bar.close()
        raise UserError(_stop_message(state, limit, latest_checkpoint(run.run_dir)))
