"""`PBTTuner.choose`: the final model of a search and which member it is.

The same choice as `Population.choose` (`keras_pbt.core.final`): every
member's final model (its latest completed segment, restored by
`load_model`) is evaluated on `validation_data`, and the best score wins,
equal scores broken by the lower loss, then by member id. Without
`validation_data`, it is the oracle's best member at the end
(`get_best_models(1)`'s), on the objective it ranked on.
"""

from keras_pbt.core import final as final_lib
from keras_pbt.core import selection as selection_lib
from keras_pbt.population import data as data_lib
from keras_pbt.tuner.segments import MEMBER
from keras_pbt.tuner.segments import user_values


class TunerChoice:
    """`choose()` for `PBTTuner` (a mixin)."""

    def choose(self, validation_data=None, batch_size=None):
        """The final model and which member it is: a `keras_pbt.FinalChoice`.

        Args:
            validation_data: optional `(x, y)` or a `tf.data.Dataset` held
                out from training and from the objective, to choose on (the
                recommended choice). Its metric is the objective without
                the `"val_"` prefix.
            batch_size: for evaluating arrays. Defaults to 32.

        Returns:
            A `keras_pbt.FinalChoice` (`model`, `member_id`, `hparams`,
            `score`, `metric`, `split`, `loss`, `scores`, `schedule`).

        Example:

        ```python
        tuner.search(x, y, validation_data=(x_val, y_val), epochs=20)
        final = tuner.choose(validation_data=(x_select, y_select))
        print(final.member_id, final.score, final.hparams)
        ```
        """
        oracle = self.oracle
        latest = {}
        for trial in oracle.get_best_trials(len(oracle.trials)):
            member = trial.hyperparameters.values.get(MEMBER)
            if member is not None and trial.score is not None and int(member) not in latest:
                latest[int(member)] = trial
            if len(latest) == oracle.population_size:
                break
        if not latest:
            raise ValueError("No member has completed a segment yet: call search first.")
        objective = oracle.objective.name
        if validation_data is None:
            scores = {m: float(t.score) for m, t in latest.items()}
            best = next(iter(latest))  # get_best_trials' order: the oracle's best first
            return self._final(best, latest[best], self.load_model(latest[best]), scores,
                               objective, "last boundary", None)
        args = data_lib.evaluation_args(validation_data)
        name = selection_lib.metric_name(objective)
        models, scores, losses = {}, {}, {}
        for member, trial in latest.items():
            models[member] = self.load_model(trial)
            logs = models[member].evaluate(*args, batch_size=batch_size, verbose=0,
                                           return_dict=True)
            if name not in logs:
                raise ValueError(f"The objective `{objective}` needs the metric {name!r} from "
                                 f"evaluate, which returned {sorted(logs)}. Received: "
                                 "validation_data=...")
            scores[member] = float(logs[name])
            if "loss" in logs:
                losses[member] = float(logs["loss"])
        best = final_lib.choose_member(scores, oracle.mode, losses)
        return self._final(best, latest[best], models[best], scores, name, "validation_data",
                           losses.get(best))

    def _final(self, member, trial, model, scores, metric, split, loss):
        schedule = tuple((e.step, dict(e.hparams)) for e in self.oracle.schedule(member))
        return final_lib.FinalChoice(
            model=model, member_id=member, hparams=user_values(trial.hyperparameters.values),
            score=scores[member], metric=metric, split=split, loss=loss, scores=dict(scores),
            schedule=schedule)
