"""Synthetic voices as string ids, the voice pool per engine, and voice splits.

Voice ids: ``espeak:<accent>+<variant>:s<speed>:p<pitch>`` (e.g. ``espeak:en-gb-scotland+m3:s160:p40``),
``flite:<voice>``, ``festival:<voice>``, ``piper:<voice>[:l<length_scale>]``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from whisperkd.data.splits import split_counts
from whisperkd.errors import UserError

ENGINES = ("espeak", "flite", "festival", "piper")
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
                  "en-029", "en-us-nyc")
# espeak-ng's variant files (Debian espeak-ng 1.51/1.52), less those that are near-unintelligible even for
# Whisper (RicishayMax, RicishayMax2, RicishayMax3, AnxiousAndy, kaukovalta) and "Mr serious" (has a space).
ESPEAK_VARIANTS = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "Demonic", "Denis", "Diogo", "Gene", "Gene2", "Henrique",
    "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "Storm", "Tweaky", "UniRobot",
    "adam", "anika", "anikaRobot", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb",
    "croak", "david", "ed", "edward", "edward2", "f1", "f2", "f3", "f4", "f5", "fast", "grandma", "grandpa",
    "gustave", "iven", "iven2", "iven3", "iven4", "john", "klatt", "klatt2", "klatt3", "klatt4", "klatt5",
    "klatt6", "linda", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "marcelo", "max", "michel", "miguel",
    "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "robosoft", "robosoft2", "robosoft3",
    "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8", "sandro", "shelby", "steph", "steph2",
    "steph3", "travis", "victor", "whisper", "whisperf", "zac",
)
ESPEAK_SPEEDS = tuple(range(140, 186, 5))  # words per minute (espeak-ng default 175)
ESPEAK_PITCHES = tuple(range(30, 71, 5))  # 0-99 (default 50)
FLITE_VOICES = ("kal16", "awb", "rms", "slt")  # not "kal": it is 8 kHz
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
PIPER_VOICES = ("joe",)


@dataclass(frozen=True)
class Voice:
    """One synthetic voice; ``options`` holds engine settings such as ``s`` (speed) and ``p`` (pitch)."""

    engine: str
    name: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        """The voice id string, e.g. ``espeak:en-gb+m3:s160:p40``."""
        return ":".join([self.engine, self.name] + [f"{k}{v}" for k, v in self.options])

    @property
    def speaker(self) -> str:
        """The id as a folder-safe speaker name (letters, digits, underscores)."""
        return re.sub(r"[^A-Za-z0-9]+", "_", self.id).strip("_")

    def option(self, key: str, default: str | None = None) -> str | None:
        """The value of option ``key`` (e.g. ``"s"``), or ``default``."""
        return dict(self.options).get(key, default)

    def __str__(self) -> str:
        return self.id


def parse_voice(voice_id: str) -> Voice:
    """Parse and validate a voice id; UserError names the id and the accepted forms."""
    engine, _, rest = voice_id.strip().partition(":")
    if engine not in ENGINES or not rest:
        raise UserError(f"voice '{voice_id}': expected ENGINE:NAME with ENGINE one of {', '.join(ENGINES)}")
    name, *opts = rest.split(":")
    options = []
    for opt in opts:
        if len(opt) < 2 or not opt[0].isalpha():
            raise UserError(f"voice '{voice_id}': bad option '{opt}' (use e.g. s160, p40, l1.1)")
        options.append((opt[0], opt[1:]))
    known = {"espeak": None, "flite": FLITE_VOICES, "festival": FESTIVAL_VOICES, "piper": PIPER_VOICES}[engine]
    if engine == "espeak":
        accent, _, variant = name.partition("+")
        if accent not in ESPEAK_ACCENTS or (variant and variant not in ESPEAK_VARIANTS):
            raise UserError(f"voice '{voice_id}': espeak voices are ACCENT[+VARIANT] with ACCENT one of "
                            f"{', '.join(ESPEAK_ACCENTS)} and a variant from `espeak-ng --voices=variant`")
        allowed = {"s", "p"}
    else:
        if name not in known:
            raise UserError(f"voice '{voice_id}': {engine} voices are {', '.join(known)}")
        allowed = {"l"} if engine == "piper" else set()
    for key, value in options:
        if key not in allowed:
            raise UserError(f"voice '{voice_id}': option '{key}' is not valid for {engine}")
        try:
            float(value)
        except ValueError:
            raise UserError(f"voice '{voice_id}': option '{key}{value}' needs a number") from None
    return Voice(engine, name, tuple(options))


def engine_pool(engine: str, seed: int = 0) -> list[Voice]:
    """Every voice of ``engine``; espeak voices (accent x variant) get a speed and pitch drawn from ``seed``."""
    if engine == "espeak":
        rng = random.Random(f"espeak-pool-{seed}")
        return [Voice("espeak", f"{accent}+{variant}",
                      (("s", str(rng.choice(ESPEAK_SPEEDS))), ("p", str(rng.choice(ESPEAK_PITCHES)))))
                for accent in ESPEAK_ACCENTS for variant in ESPEAK_VARIANTS]
    names = {"flite": FLITE_VOICES, "festival": FESTIVAL_VOICES, "piper": PIPER_VOICES}.get(engine)
    if names is None:
        raise UserError(f"unknown speech engine '{engine}' (one of {', '.join(ENGINES)})")
    return [Voice(engine, name) for name in names]


def resolve_voices(spec: str | Iterable[str], seed: int = 0, max_per_engine: int | None = None) -> list[Voice]:
    """Voices from engine names and/or explicit ids (comma-separated or a list), without duplicates.

    An engine name stands for its pool, shuffled by ``seed`` and cut to ``max_per_engine`` voices.
    """
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise UserError("--voices: give engine names (espeak, flite, festival, piper) or voice ids")
    out: list[Voice] = []
    for item in items:
        if item in ENGINES:
            pool = engine_pool(item, seed)
            random.Random(f"{item}-{seed}").shuffle(pool)
            out.extend(pool[:max_per_engine] if max_per_engine else pool)
        else:
            out.append(parse_voice(item))
    return list(dict.fromkeys(out))


def split_voices(voices: Sequence[Voice], fractions: dict[str, float] | None = None,
                 seed: int = 0) -> dict[str, list[Voice]]:
    """Disjoint voice sets, split within each engine so every split gets each engine where possible.

    An engine with fewer voices than splits fills the splits in order (train first).
    """
    fractions = dict(fractions or {"train": 0.8, "dev": 0.1, "test": 0.1})
    out: dict[str, list[Voice]] = {name: [] for name in fractions}
    for engine in dict.fromkeys(v.engine for v in voices):
        group = [v for v in voices if v.engine == engine]
        random.Random(f"split-{engine}-{seed}").shuffle(group)
        counts = split_counts(len(group), fractions)
        start = 0
        for name, count in counts.items():
            out[name].extend(group[start:start + count])
            start += count
    return out
