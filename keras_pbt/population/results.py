"""What a trained `Population` hands back: lineage, histories, the best member
and its model, evaluation and the closing summary line (a mixin)."""

from keras_pbt.core import ancestry as schedule_lib
from keras_pbt.core import final as final_lib
from keras_pbt.core import selection as selection_lib
from keras_pbt.population import data as data_lib
from keras_pbt.runtime import snapshot as snapshot_lib
from keras_pbt.storage.payload import Snapshot


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
    def epochs_trained(self):
        """Epochs trained in all by every member's device, over every `fit` so far.

        A wide start's configurations count (`keras_pbt.WideStart`): a
        population of N members fit for E epochs trains N * E epochs,
        with or without one.
        """
        return sum(m.epochs_trained for m in self.members)

    @property
    def best_member(self):
        """The `Member` with the best metric at its latest boundary
        (`keras_pbt.core.ancestry.order_members`: NaN last, ties by member id)."""
        best_id = self._first(self._last_metrics())
        return next(m for m in self.members if m.member_id == best_id)

    def _last_metrics(self):
        """member id -> its metric at its latest boundary (members with a report)."""
        histories = self.store.histories()
        return {m.member_id: histories[m.member_id][-1].metric for m in self.members
                if histories.get(m.member_id)}

    def _first(self, scores):
        """The key ranked first by `order_members` (NaN last, ties by member order)."""
        ranked = schedule_lib.order_members(scores, self.mode)
        if not ranked:
            raise ValueError("No member has reported a metric yet: call fit first.")
        return ranked[0]

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
        return {m.member_id: _evaluated(m.model, x, y, batch_size) for m in self.members}

    def choose(self, validation_data=None, batch_size=None):
        """The final model and which member it is: a `keras_pbt.FinalChoice`.

        With `validation_data` (a split used neither for training nor for
        ranking, the recommended choice), every member is evaluated on it
        once and the best there is chosen: the best score, equal scores
        broken by the lower loss, then by member id. Its `score` is an
        honest estimate of the model's quality. Without it, the choice is
        `best_member`: the best monitored metric at the last boundary, on
        the split PBT ranked on at every boundary, so its score is
        optimistic.

        Args:
            validation_data: optional `(x, y)` or a `tf.data.Dataset` to
                choose on. Its metric is `monitor` without the `"val_"`
                prefix (`"val_accuracy"` -> `"accuracy"`).
            batch_size: for evaluating arrays. Defaults to 32.

        Returns:
            A `keras_pbt.FinalChoice` with `model`, `member_id`, `hparams`,
            `score`, `metric`, `split`, `loss`, `scores` and `schedule`.

        Example:

        ```python
        pop.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=20)
        final = pop.choose(validation_data=(x_select, y_select))
        print(final.member_id, final.metric, final.score, final.hparams)
        final.model.evaluate(x_test, y_test)
        ```
        """
        # Iterated PBT's champions (the best member at each restart) compete
        # with the final members, under the key "<member id>@<step>".
        champions = {f"{c.member_id}@{c.step}": c for c in self.store.champions()}
        if validation_data is None:
            scores = self._last_metrics()
            scores.update({k: c.metric for k, c in champions.items()})
            best_id = self._first(scores)
            return self._choice(self._member_or_champion(best_id, champions), best_id, scores,
                                self.monitor, "last boundary", None)
        args = data_lib.evaluation_args(validation_data)
        evaluated = self.evaluate(*args, batch_size=batch_size)
        models = {k: self._champion_model(c) for k, c in champions.items()}
        evaluated.update({k: _evaluated(model, *args, batch_size=batch_size)
                          for k, model in models.items()})
        name = selection_lib.metric_name(self.monitor)
        first = next(iter(evaluated.values()))
        if name not in first:
            raise ValueError(
                f"`monitor={self.monitor!r}` needs the metric {name!r} from evaluate, which "
                f"returned {sorted(first)}. Received: validation_data=..."
            )
        scores = {mid: s[name] for mid, s in evaluated.items()}
        losses = {mid: s["loss"] for mid, s in evaluated.items() if "loss" in s}
        best_id = final_lib.choose_member(scores, self.mode, losses)
        return self._choice(self._member_or_champion(best_id, champions), best_id, scores, name,
                            "validation_data", losses.get(best_id), models.get(best_id))

    def _member_or_champion(self, key, champions):
        """The `Member` whose id is `key`, or the champion's `Snapshot` keyed so."""
        if key in champions:
            return champions[key]
        return next(m for m in self.members if m.member_id == key)

    def _champion_model(self, snapshot):
        """A new model (`build(hp)`) holding a champion's weights; its optimizer is new."""
        model = self._build(dict(snapshot.hparams))
        snapshot_lib.restore_weights(model, snapshot)
        return model

    def _choice(self, chosen, key, scores, metric, split, loss, model=None):
        """The `FinalChoice` of a `Member`, or of a champion's `Snapshot`."""
        champion = isinstance(chosen, Snapshot)
        if champion and model is None:
            model = self._champion_model(chosen)
        step = chosen.step if champion else None
        return final_lib.FinalChoice(
            model=model if champion else chosen.model, member_id=chosen.member_id,
            hparams=dict(chosen.hparams), score=scores[key], metric=metric, split=split,
            loss=loss, scores=dict(scores), step=step, schedule=tuple(
                schedule_lib.ancestry_schedule(self.lineage, chosen.member_id, step=step)))

    def best_model(self, validation_data=None, batch_size=None):
        """The trained `keras.Model` of `choose(validation_data, batch_size)`.

        `choose` says which member it is (`member_id`, `hparams`, `score`,
        `schedule`); this is its `model`.

        Returns:
            A `keras.Model`.
        """
        return self.choose(validation_data, batch_size).model

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


def _evaluated(model, x, y=None, batch_size=None):
    """`model.evaluate` on `(x, y)` as a dict metric name -> float."""
    return {k: float(v) for k, v in model.evaluate(
        x, y, batch_size=batch_size, verbose=0, return_dict=True).items()}
