"""Teacher and student must share a tokenizer for token-level distillation (KL, TAID)."""

from __future__ import annotations

from whisperkd.errors import UserError
from whisperkd.models.tokenizer import special_ids


def describe_vocabulary(tokenizer) -> str:
    """A short description, e.g. ``multilingual, 51865 tokens, end-of-text 50257``."""
    kind = "multilingual" if len(tokenizer) >= 51865 else "English-only"
    return f"{kind}, {len(tokenizer)} tokens, end-of-text {special_ids(tokenizer)['eot']}"


def check_same_vocabulary(teacher, student, teacher_name: str = "teacher", student_name: str = "student") -> None:
    """Refuse a teacher/student pair whose tokenizers differ (accepts tokenizers or processors)."""
    t = getattr(teacher, "tokenizer", teacher)
    s = getattr(student, "tokenizer", student)
    if len(t) == len(s) and special_ids(t) == special_ids(s) and t.get_vocab() == s.get_vocab():
        return
    raise UserError(
        f"{teacher_name} ({describe_vocabulary(t)}) and {student_name} ({describe_vocabulary(s)}) have different "
        "vocabularies, so token-level KL/TAID is meaningless; valid options: a student derived from the teacher "
        "(e.g. base -> base-derived, tiny.en -> tiny.en-derived), another checkpoint with the same tokenizer, "
        "or sequence-level distillation on teacher transcripts with CE only (loss.kl_weight=0)"
    )
