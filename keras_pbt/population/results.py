"""What a trained `Population` hands back: lineage, histories, the best member
and its model, evaluation and the closing summary line (a mixin)."""

from keras_pbt.core import ancestry as schedule_lib
from keras_pbt.population import data as data_lib


class PopulationResults:
    """The results of a `keras_pbt.Population` (mixed into it)."""

    @property
    def lineage(self):
        """Every `LineageRecord` of the run, in order."""
        return self.store.lineage()

    @property
    def history(self):
        """dict member id -> dict metric -> list of per-epoch values."""
        return {m.member_id: dict(m.history) for m in self.members}

    @property
    def best_member(self):
        """The `Member` with the best metric at its latest boundary
        (`keras_pbt.core.ancestry.order_members`: NaN last, ties by member id)."""
        histories = self.store.histories()
        ranked = schedule_lib.order_members(
            {m.member_id: histories[m.member_id][-1].metric for m in self.members if histories.get(m.member_id)},
            self.mode)
        if not ranked:
            raise ValueError("No member has reported a metric yet: call fit first.")
        return next(m for m in self.members if m.member_id == ranked[0])

    def evaluate(self, x, y=None, batch_size=None):
        """Evaluates every member's current model on `(x, y)`.

        Args:
            x, y: arrays (or a `tf.data.Dataset` in `x`), as for
                `keras.Model.evaluate`.
            batch_size: as for `keras.Model.evaluate`. Defaults to 32.

        Returns:
            dict member id -> dict metric name -> float (the names of
            `model.evaluate(..., return_dict=True)`, e.g. `"accuracy"`).
        """
        return {m.member_id: {k: float(v) for k, v in m.model.evaluate(
                    x, y, batch_size=batch_size, verbose=0, return_dict=True).items()}
                for m in self.members}

    def best_model(self, validation_data=None, batch_size=None):
        """The trained `keras.Model` of the best member.

        Without `validation_data`, the best is `best_member`: the best metric
        at the latest boundary, on the split PBT ranked on. That score is
        optimistic, since every interval selected on it. With
        `validation_data` (a split used neither for training nor for
        ranking), every member is evaluated on it and the best there is
        returned: an unbiased final choice (the same rule: NaN last, ties by
        member id).

        Args:
            validation_data: optional `(x, y)` or a `tf.data.Dataset` to
                choose on. Its metric is `monitor` without the `"val_"`
                prefix (`"val_accuracy"` -> `"accuracy"`).
            batch_size: for evaluating arrays. Defaults to 32.

        Returns:
            A `keras.Model`.

        Example:

        ```python
        pop.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=20)
        model = pop.best_model(validation_data=(x_select, y_select))
        ```
        """
        if validation_data is None:
            return self.best_member.model
        if data_lib.is_dataset(validation_data):
            scores = self.evaluate(validation_data, batch_size=batch_size)
        elif isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
            scores = self.evaluate(*validation_data, batch_size=batch_size)
        else:
            raise ValueError(
                "`validation_data` must be (x, y) or a tf.data.Dataset. Received: "
                f"validation_data of type {type(validation_data).__name__}"
            )
        name = self.monitor[4:] if self.monitor.startswith("val_") else self.monitor
        first = next(iter(scores.values()))
        if name not in first:
            raise ValueError(
                f"`monitor={self.monitor!r}` needs the metric {name!r} from evaluate, which "
                f"returned {sorted(first)}. Received: validation_data=..."
            )
        best = schedule_lib.order_members({member_id: s[name] for member_id, s in scores.items()}, self.mode)[0]
        return next(m for m in self.members if m.member_id == best).model

    def _print_summary(self, progress):
        best = self.best_member
        exploits = sum(1 for r in self.lineage if r.action == "exploit")
        restarts = sum(1 for r in self.lineage if r.action == "restart")
        hp = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}"
                       for k, v in best.hparams.items())
        progress.message(
            f"PBT done in {self.elapsed:.1f} s: best member {best.member_id!r} with {self.monitor}="
            f"{best.last_metric:.4g}; final hyperparameters {hp}; {exploits} exploits, "
            f"{restarts} restarts."
        )
