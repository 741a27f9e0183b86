"""The offline teacher cache (docs/cache.md), one concern per module:

- :mod:`~whisperkd.distill.cache.key`: what a cache depends on (fingerprints, :func:`key_parts`) and the
  :class:`CachePlan` a run asks of it;
- :mod:`~whisperkd.distill.cache.store`: the files (safetensors shards, index, ``cache.json``);
- :mod:`~whisperkd.distill.cache.build`: the teacher pass that computes the shards (:func:`build_cache`,
  :func:`check_cache`, :func:`ensure_cache`);
- :mod:`~whisperkd.distill.cache.reader`: reading it back (:class:`CachedTeacher`, and the audio-free
  training examples :class:`CachedSpeechDataset`, batched by ``WhisperCollator``).

The settings are the config's ``cache:`` section, :class:`whisperkd.config.CacheConfig`, plus the
:class:`CachePlan` derived from the rest of the run's config (:func:`cache_plan`). The choice between the
cached and the online teacher is :func:`whisperkd.distill.teacher.make_teacher`.
"""

from whisperkd.distill.cache.build import (ON_STALE, CacheReport, build_cache, cache_dir_of, check_cache,
                                           ensure_cache, run_splits, teacher_forward)
from whisperkd.distill.cache.key import CachePlan, cache_plan, key_parts
from whisperkd.distill.cache.reader import CachedSpeechDataset, CachedTeacher, cache_loader, check_needs
from whisperkd.distill.cache.store import CacheSplit

__all__ = ["ON_STALE", "CachePlan", "CacheReport", "CacheSplit", "CachedSpeechDataset", "CachedTeacher", "build_cache", "cache_dir_of", "cache_loader", "cache_plan",
           "check_cache", "check_needs", "ensure_cache", "key_parts", "run_splits", "teacher_forward"]
