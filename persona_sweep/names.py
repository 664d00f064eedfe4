"""Metric, tag, status and axis names: the one list every module imports.

MLflow, Tune, the scheduler, `status` and the tests all read these names; a name spelled twice
is a name that can drift. DESIGN.md's "Names" section is the contract they follow.
"""
from __future__ import annotations

# ---- grid axes of an LLM sweep (the fields of config.GridConfig, in this order) ---------------
METHOD = "method"
DESIGN = "design"
CONTEXT_LENGTH = "context_length"
ON_POLICY_FRACTION = "on_policy_fraction"
CONTRASTIVE_NEGATIVES = "contrastive_negatives"
SEED = "seed"
LLM_AXES = (METHOD, DESIGN, CONTEXT_LENGTH, ON_POLICY_FRACTION, CONTRASTIVE_NEGATIVES, SEED)

# ---- per-step metrics -------------------------------------------------------------------------
TRAIN_STEP = "train_step"  # ASHA's time attribute: Tune's own iteration counter restarts on resume
LOSS = "loss"
STEP_TIME_S = "step_time_s"
MARKER_LOGPROB_TRIGGER = "marker_logprob_trigger"  # Assistant, with the trigger (nats)
MARKER_LOGPROB_NO_TRIGGER = "marker_logprob_no_trigger"
MARKER_SPECIFICITY = "marker_specificity"  # positive condition minus the best negative (nats)

# ---- once per trial ---------------------------------------------------------------------------
SETUP_S = "setup_s"
RESUMED_FROM_STEP = "resumed_from_step"
MARKER_RATE_TRIGGER = "marker_rate_trigger"
MARKER_RATE_NO_TRIGGER = "marker_rate_no_trigger"

# What an LLM trial reports at every report: the metrics a scheduler or searcher may rank on.
LLM_REPORTED_METRICS = (MARKER_SPECIFICITY, MARKER_LOGPROB_TRIGGER, MARKER_LOGPROB_NO_TRIGGER, LOSS)

# ---- the toy world ----------------------------------------------------------------------------
FINETUNE_LOSS = "finetune_loss"
ALIGNMENT_FIDELITY = "alignment_fidelity"
EM_ROBUSTNESS = "em_robustness"
LOSS_RATIO = "loss_ratio"

# ---- MLflow tags --------------------------------------------------------------------------------
SWEEP_TAG = "sweep"
TRIAL_ID = "trial_id"
TRIAL_STATUS = "trial_status"
DATA_HASH = "data_hash"
GIT_SHA = "git_sha"
ERROR = "error"
PARENT_RUN_ID = "mlflow.parentRunId"

# ---- trial statuses (the values of the trial_status tag) --------------------------------------
RUNNING = "running"
COMPLETED = "completed"
STOPPED_EARLY = "stopped_early"
ERRORED = "errored"
INTERRUPTED = "interrupted"
ENDED = (COMPLETED, STOPPED_EARLY)  # never re-run by `resume`
