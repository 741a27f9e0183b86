"""Deploy a distilled student: export it (HF, CTranslate2), transcribe recordings of any length, speculative decoding."""
