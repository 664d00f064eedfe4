"""The Optuna searcher of `search.type: optuna` (imported only when a sweep searches: it loads
Optuna and Ray Tune's integration)."""
from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch


class RankedAtTheEnd(OptunaSearch):
    """Optuna ranking on `search_value`: NaN in every report but a trial's last, which carries the
    search metric's value, or the worst one (a broken floor, a NaN: `SearchConfig.ranked`). So
    the search metric may be one a trial has only at its end; nothing is pruned on the way."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Intermediate results carry no value to rank."""
