"""Hyperparameter search around ``whisperkd distill`` (Optuna): see :mod:`whisperkd.tuning.tune` and docs/tuning.md.

    space.py   the ``tune:`` section of a config: study settings and the search space (dotted config keys)
    study.py   storage, the trial budget shared by every worker, one trial = one objective call
    report.py  best_params.json, best_config.yaml, trials.json and the plots of the study report
"""
