"""Augmented copies of training utterances: additive noise, speed perturbation, reverberation, SpecAugment.

``augmented_copies(train, AugmentSettings(copies=N, ...))`` returns the training utterances as they are, followed
by N copies of each (:class:`AugmentedUtterance`, id ``<id>#aug<k>``, same transcript). A copy carries its
settings and copy index, and whatever reads it applies them: :class:`whisperkd.data.loader.SpeechDataset` (the
online path, and the teacher cache's build) calls :meth:`AugmentedUtterance.augment_audio` on the decoded
samples and :meth:`AugmentedUtterance.augment_features` on the log-mel. Labels never change.

Order within a copy: speed -> reverberation -> noise on the 16-kHz samples, then log-mel, then SpecAugment. Each
effect happens with its own probability, and every draw (whether it happens, its parameter, the noise samples,
the impulse response, the masks) comes from a generator of its own, seeded by sha256(seed, utterance id, copy
index, effect): the same copy is the same in every call, process, worker and run, whatever was drawn before
it, and nothing touches the global ``random``/``numpy.random`` state. Changing one effect's settings leaves the
draws of the others as they were.

Libraries (docs/data.md, "Augmentation", says why not audiomentations): speed is soxr's resampler (the one
:func:`whisperkd.data.audio.load_audio` uses); noise, the synthetic room impulse response and its FFT
convolution, and the SpecAugment masks are numpy (``numpy.random.Generator``, ``numpy.fft``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import soxr

from whisperkd.data.audio import SAMPLE_RATE
from whisperkd.data.utterance import Utterance

MAX_SECONDS = 30.0  # Whisper's window: speed perturbation never makes a clip longer than this
DIRECT_TO_REVERB_DB = 0.0  # energy of the direct sound over that of the synthetic reverberant tail
# transformers' WhisperConfig defaults for the options not exposed as settings
MASK_TIME_MIN_MASKS = 2
MASK_FEATURE_MIN_MASKS = 0


@dataclass(frozen=True)
class AugmentSettings:
    """What the config's ``data.augment`` section holds (:class:`whisperkd.config.AugmentConfig` mirrors it; the
    data layer cannot import the config). Ranges are ``[low, high]``, drawn uniformly; probabilities are per copy.
    The SpecAugment options mean what transformers' ``WhisperConfig`` options of the same names mean."""

    copies: int = 0
    seed: int = 0
    noise_prob: float = 0.5
    noise_snr_db: Sequence[float] = (10.0, 30.0)
    speed_prob: float = 0.5
    speed_range: Sequence[float] = (0.9, 1.1)
    reverb_prob: float = 0.3
    reverb_rt60: Sequence[float] = (0.2, 0.8)
    specaugment_prob: float = 0.5
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10

    def __post_init__(self):  # lists from a config become tuples: the settings stay hashable and comparable
        for name in ("noise_snr_db", "speed_range", "reverb_rt60"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

    def identity(self) -> dict:
        """Everything that decides what a copy sounds like (all but ``copies``): part of a copy's cache key."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        out.pop("copies")
        return out


def copy_id(uid: str, copy: int) -> str:
    """The id of copy ``copy`` (1, 2, ...) of utterance ``uid``: ``<uid>#aug<copy>``."""
    return f"{uid}#aug{copy}"


def effect_rng(seed: int, uid: str, copy: int, effect: str) -> np.random.Generator:
    """The generator of one effect of one copy: a function of (seed, utterance id, copy, effect) alone."""
    digest = hashlib.sha256(json.dumps([int(seed), str(uid), int(copy), effect]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


# ---------------------------------------------------------------- the effects (pure functions of their draws)

def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``audio`` plus white Gaussian noise scaled to exactly ``snr_db`` dB below the clip's RMS (no clipping)."""
    noise = rng.standard_normal(audio.shape[0])
    level = rms(noise)
    if level == 0 or rms(audio) == 0:
        return audio
    noise *= rms(audio) / (level * 10 ** (snr_db / 20))
    return (audio + noise).astype(np.float32)


def speed_factor(drawn: float, samples: int, sample_rate: int = SAMPLE_RATE) -> float:
    """The drawn speed factor, raised where the result would be longer than :data:`MAX_SECONDS` (never above 1:
    a clip that is already longer is not sped up for it)."""
    return max(float(drawn), min(1.0, samples / (MAX_SECONDS * sample_rate)))


def change_speed(audio: np.ndarray, factor: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Kaldi-style speed perturbation: the clip played ``factor`` times as fast (tempo and pitch change together;
    length / factor), by resampling with soxr. A slowed clip is cut at :data:`MAX_SECONDS` (a rounding sample)."""
    if factor == 1.0:
        return audio
    out = soxr.resample(audio, sample_rate * factor, sample_rate)
    if factor < 1.0:
        out = out[: max(int(MAX_SECONDS * sample_rate), audio.shape[0])]
    return np.asarray(out, dtype=np.float32)


def room_impulse_response(rt60: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic room impulse response: a unit direct path, then Gaussian noise decaying exponentially by 60 dB
    over ``rt60`` seconds, its energy :data:`DIRECT_TO_REVERB_DB` dB below the direct sound's."""
    n = max(2, int(round(rt60 * sample_rate)))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * 10.0 ** (-3.0 * t / rt60)  # amplitude 10^-3 (-60 dB) at t = rt60
    tail[0] = 0.0
    tail *= math.sqrt(10 ** (-DIRECT_TO_REVERB_DB / 10) / float(np.sum(tail ** 2)))
    tail[0] = 1.0
    return tail


def reverberate(audio: np.ndarray, rt60: float, rng: np.random.Generator,
                sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``audio`` convolved (numpy FFT) with :func:`room_impulse_response`, cut to its own length (the tail past
    the end is dropped) and brought back to its RMS."""
    rir = room_impulse_response(rt60, rng, sample_rate)
    n = audio.shape[0]
    size = 1 << (n + rir.shape[0] - 2).bit_length()
    wet = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(rir, size), size)[:n]
    level = rms(wet)
    return (wet * (rms(audio) / level) if level > 0 else wet).astype(np.float32)


def span_mask(length: int, axis: int, prob: float, span: int, min_masks: int,
              rng: np.random.Generator) -> np.ndarray:
    """A boolean mask over ``axis`` positions, of which the first ``length`` are real: transformers'
    ``_compute_mask_indices`` for one row (``int(prob * length / span + U[0, 1))`` spans, at least
    ``min_masks``, starts drawn without replacement from the real positions, spans cut at the axis end).
    Written again rather than called, because that function draws from numpy's global random state: it could
    not give the same masks for the same utterance in every process and run, and would move the global state."""
    mask = np.zeros(axis, dtype=bool)
    if prob <= 0 or span < 1 or span > axis:
        return mask
    count = max(int(prob * length / span + rng.random()), min_masks)
    if count * span > axis:
        count = axis // span
    count = min(count, max(length - (span - 1), 0))
    if count == 0:
        return mask
    starts = rng.choice(length - (span - 1), count, replace=False)
    positions = np.minimum((starts[:, None] + np.arange(span)[None, :]).ravel(), axis - 1)
    mask[positions] = True
    return mask


def spec_augment(features: np.ndarray, frames: int, rng: np.random.Generator, settings: AugmentSettings) -> np.ndarray:
    """SpecAugment on a (n_mels, n_frames) log-mel, masked values set to 0 as transformers' Whisper
    ``_mask_input_features`` does: time masks over the first ``frames`` (real, not padding) frames, as transformers
    draws them given the attention mask, then feature masks over whole mel rows."""
    out = np.array(features, dtype=np.float32, copy=True)
    n_mels, n_frames = out.shape
    s = settings
    if s.mask_time_prob > 0:
        out[:, span_mask(min(frames, n_frames), n_frames, s.mask_time_prob, s.mask_time_length,
                         MASK_TIME_MIN_MASKS, rng)] = 0.0
    if s.mask_feature_prob > 0:
        out[span_mask(n_mels, n_mels, s.mask_feature_prob, s.mask_feature_length, MASK_FEATURE_MIN_MASKS, rng)] = 0.0
    return out


# ---------------------------------------------------------------- augmented copies of utterances

@dataclass
class AugmentedUtterance(Utterance):
    """Copy ``copy`` (1, 2, ...) of utterance ``source_id``: the same audio and transcript, augmented by
    ``settings`` when read. Its ``duration`` is the expected one after the speed change (when the source's is
    known)."""

    source_id: str = ""
    copy: int = 1
    settings: AugmentSettings = field(default_factory=AugmentSettings)

    def rng(self, effect: str) -> np.random.Generator:
        return effect_rng(self.settings.seed, self.source_id, self.copy, effect)

    def augment_identity(self) -> dict:
        """What the teacher cache keys this copy by (besides id, text and audio): copy index and settings."""
        return {"copy": self.copy, **self.settings.identity()}

    def speed(self, samples: int, sample_rate: int = SAMPLE_RATE) -> float | None:
        """The speed factor of this copy for a clip of ``samples`` samples (capped), or None when it keeps its speed."""
        rng, s = self.rng("speed"), self.settings
        if rng.random() >= s.speed_prob:
            return None
        return speed_factor(rng.uniform(*s.speed_range), samples, sample_rate)

    def augment_audio(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Speed, reverberation and noise, each when drawn, on the decoded samples."""
        s = self.settings
        factor = self.speed(audio.shape[0], sample_rate)
        if factor is not None:
            audio = change_speed(audio, factor, sample_rate)
        rng = self.rng("reverb")
        if rng.random() < s.reverb_prob:
            audio = reverberate(audio, rng.uniform(*s.reverb_rt60), rng, sample_rate)
        rng = self.rng("noise")
        if rng.random() < s.noise_prob:
            audio = add_noise(audio, rng.uniform(*s.noise_snr_db), rng)
        return audio

    def augment_features(self, features: np.ndarray, frames: int) -> np.ndarray:
        """SpecAugment, when drawn, on the log-mel whose first ``frames`` frames hold the (augmented) audio."""
        rng = self.rng("specaugment")
        if rng.random() >= self.settings.specaugment_prob:
            return features
        return spec_augment(features, frames, rng, self.settings)


def feature_frames(samples: int, hop_length: int) -> int:
    """How many log-mel frames hold audio (the rest of the 30-s window is padding)."""
    return -(-samples // hop_length)


def augmented_copy(utt: Utterance, copy: int, settings: AugmentSettings) -> AugmentedUtterance:
    """Copy ``copy`` of ``utt`` (a clean utterance)."""
    if isinstance(utt, AugmentedUtterance):
        raise ValueError(f"{utt.id}: already an augmented copy")
    values = {f.name: getattr(utt, f.name) for f in dataclasses.fields(Utterance)}
    out = AugmentedUtterance(**{**values, "id": copy_id(utt.id, copy)}, source_id=utt.id, copy=copy,
                             settings=settings)
    if utt.duration is not None:
        factor = out.speed(int(round(utt.duration * SAMPLE_RATE)))
        out.duration = utt.duration / factor if factor is not None else utt.duration
    return out


def augmented_copies(utterances: Sequence[Utterance], settings: AugmentSettings) -> Sequence[Utterance]:
    """The utterances (unchanged, first) and ``settings.copies`` augmented copies of each, copy 1 of every
    utterance, then copy 2, ...; with ``copies=0`` the input itself."""
    if settings.copies <= 0:
        return utterances
    return [*utterances, *(augmented_copy(u, k, settings) for k in range(1, settings.copies + 1) for u in utterances)]
