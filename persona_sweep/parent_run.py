"""What an llm sweep's parent run gets once Tune returns: the base model's own measures and
how the trials' results read against them.

- The misalignment measure's positive control (`misalignment_control`).
- The leakage predictors per held-out persona (`leakage_predictors`: `base_js_<persona>`,
  `base_cosine_<persona>`), the leakage the trials measured (`leakage_mean_<persona>`) and the
  Spearman correlation of each predictor with it (`leakage_spearman_js`, `_cosine`).

The base-model measures run once per model, in a Ray task with one trial worker's resources,
not on the driver, which may be a head node without the GPU a large model needs.
"""
from __future__ import annotations

import time

from persona_sweep import leakage_predictors, misalignment_control, tracking


def base_model_measures(model_config, cache: str, batch_size: int) -> dict[str, float]:
    return {**misalignment_control.cached(model_config, cache, batch_size),
            **leakage_predictors.cached(model_config, cache)}


def log_on_parent_run(record) -> None:
    import ray
    from mlflow.entities import Metric

    spec, resources, sweep = record.config, record.config.resources, record.sweep_run
    task = ray.remote(num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker)(base_model_measures)
    metrics = ray.get(task.remote(spec.model, record.paths.cache, spec.eval.batch_size))
    leakage = leakage_predictors.measured_leakage(tracking.child_runs(sweep.tracking, sweep.experiment_id))
    metrics |= {leakage_predictors.mean_leakage_metric(name): rate for name, rate in leakage.items()}
    metrics |= leakage_predictors.correlations(metrics, leakage)
    now = int(time.time() * 1000)
    sweep.tracking.client().log_batch(sweep.parent_run_id,
                                      metrics=[Metric(key, value, now, 0) for key, value in metrics.items()])
