"""The learn loop: collect a rollout, train on it, consult the training doctor, log; until the budget is spent.

:class:`LearnLoop` is SB3's ``learn`` for the RL-for-LLM algorithms (``OnPolicyAlgorithm.learn``'s shape):
one iteration is :meth:`~agents.common.preparation.RolloutPreparation.collect_rollouts` then
:meth:`~agents.common.update.PolicyUpdate.train`, with SB3's callbacks, progress bar and logger.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ProgressBarCallback
from stable_baselines3.common.utils import safe_mean

from agents.common.distributed import is_main_process
from llm_gym.validation import check_int

__all__ = ["LearnLoop", "TimestepProgressBar", "check_learn_arguments"]


def check_learn_arguments(model: Any, total_timesteps: Any, callback: Any, log_interval: Any, tb_log_name: Any,
                          reset_num_timesteps: Any, progress_bar: Any) -> None:
    """Check ``learn()``'s arguments and that the model has an env, before anything runs.

    Raises:
        ValueError: ``total_timesteps`` not an integer >= 1 (NaN, a negative number, ``"8"`` or ``1e4``),
            ``callback`` not a callback, a list, a function or None, ``log_interval`` not an integer >= 1 or
            None, ``tb_log_name`` not a string or None, ``reset_num_timesteps`` or ``progress_bar`` not a
            bool, or no env (a model loaded without one).
    """
    try:
        check_int("total_timesteps", total_timesteps, minimum=1)
    except ValueError as exc:
        raise ValueError(f"learn(): {exc} It counts env steps to collect (responses at sequence level); pass a "
                         f"whole number such as 10_000 or int(1e4).") from None
    if log_interval is not None:
        try:
            check_int("log_interval", log_interval, minimum=1)
        except ValueError as exc:
            raise ValueError(f"learn(): {exc} It is the number of iterations between log dumps; pass None to "
                             f"never dump.") from None
    if not (callback is None or callable(callback) or isinstance(callback, (BaseCallback, list))):
        raise ValueError(f"learn(): callback must be an SB3 callback, a list of them, a function(locals, globals) "
                         f"or None; got {callback!r}.")
    if tb_log_name is not None and not isinstance(tb_log_name, str):
        raise ValueError(f"learn(): tb_log_name must be a string or None, got {tb_log_name!r}.")
    for name, value in (("reset_num_timesteps", reset_num_timesteps), ("progress_bar", progress_bar)):
        if not isinstance(value, bool):
            raise ValueError(f"learn(): {name} must be True or False, got {value!r} ({type(value).__name__}).")
    if model.env is None:
        raise ValueError(f"learn(): {type(model).__name__} has no env to train on (a model loaded without env=). "
                         f"Pass load(path, env=env) or call model.set_env(env) first.")


#: Advantage estimators whose baseline is the group's rewards: with them a group of equal rewards gives no
#: gradient (the doctor's zero-variance check); GAE, REINFORCE++ and RFT learn from such groups.
GROUP_ESTIMATORS = ("grpo", "rloo", "reinforce_plus_plus_baseline")


class TimestepProgressBar(ProgressBarCallback):
    """SB3's progress bar, advanced by the timesteps the algorithm counted rather than ``num_envs`` per call.

    SB3's ``ProgressBarCallback`` adds ``training_env.num_envs`` on every ``on_step``, which holds for SB3's
    own loop. Here a step call may stand for fewer rows (a token-level wave whose rows have ended) or for one
    row of a :class:`~llm_gym.envs.vector.SequenceVecEnv` of N rows, so the bar follows ``num_timesteps``.
    """

    def _on_training_start(self) -> None:
        super()._on_training_start()
        self._counted = self.model.num_timesteps

    def _on_step(self) -> bool:
        self.pbar.update(self.model.num_timesteps - self._counted)
        self._counted = self.model.num_timesteps
        return True


class LearnLoop:
    """Mixin of :class:`~agents.common.base.LLMAlgorithm`: ``learn`` and the per-iteration logging.

    Reads SB3's counters, logger and ``ep_info_buffer``, the rollout and train statistics of the iteration
    (``self._rollout_stats``, ``self._train_stats``) and ``self.doctor``.
    """

    def _init_callback(self, callback: Any, progress_bar: bool = False) -> BaseCallback:
        """SB3's ``_init_callback`` with :class:`TimestepProgressBar` as the progress bar."""
        callback = super()._init_callback(callback, False)
        if progress_bar:
            callback = CallbackList([callback, TimestepProgressBar()])
            callback.init_callback(self)
        return callback

    def learn(self, total_timesteps: int, callback=None, log_interval: int = 1, tb_log_name: str | None = None,
              reset_num_timesteps: bool = True, progress_bar: bool = False):
        """Train for ``total_timesteps`` env steps (responses at sequence level), SB3's ``learn``.

        Args:
            total_timesteps: env steps to collect (rounded up to whole rollouts of ``N``).
            callback: SB3 callback(s) (``CheckpointCallback``, ``EvalCallback``, ``CallbackList``...).
            log_interval: dump logs every this many iterations.
            tb_log_name: TensorBoard run name (default: the class name).
            reset_num_timesteps: start the timestep counter (and a new TensorBoard run) from 0.
            progress_bar: show a tqdm/rich progress bar.

        Returns:
            The algorithm itself (SB3's convention).

        Raises:
            ValueError: an invalid argument, or no env (:func:`check_learn_arguments`; the message names it).
            NonFiniteError: a NaN or infinity reached the update, or an optimizer step made the weights
                non-finite (:mod:`agents.common.guards`).
        """
        check_learn_arguments(self, total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps,
                              progress_bar)
        iteration = 0
        self._n_updates = getattr(self, "_n_updates", 0)
        total_timesteps, callback = self._setup_learn(total_timesteps, callback, reset_num_timesteps,
                                                      tb_log_name or type(self).__name__,
                                                      progress_bar and is_main_process())
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            self._iteration = iteration + 1
            if not self.collect_rollouts(self.env, callback, self.rollout_buffer):
                break
            iteration += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            self._train_stats = {}
            if len(self.rollout_buffer):  # empty when dynamic sampling found no informative group
                self.train()
            self._consult_doctor(iteration)
            if log_interval is not None and iteration % log_interval == 0:
                self.dump_logs(iteration)
        callback.on_training_end()
        return self

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        """SB3's ``progress_remaining`` (1 at the start of ``learn``, 0 at its end), kept in [0, 1].

        The last rollout may take ``num_timesteps`` past the budget (rollouts are whole, and dynamic sampling
        counts every generated response); SB3's ``1 - num_timesteps / total_timesteps`` would then be negative
        and a schedule such as ``lambda p: p * 1e-6`` would return a negative learning rate.
        """
        self._current_progress_remaining = min(1.0, max(0.0, 1.0 - float(num_timesteps) / float(total_timesteps)))

    def _consult_doctor(self, iteration: int) -> None:
        """Give the iteration's metrics to the training doctor (warnings once each; docs/troubleshooting.md)."""
        metrics = {**self._rollout_stats, **self._train_stats}
        if len(self.ep_info_buffer) > 0:
            metrics["rollout/ep_rew_mean"] = safe_mean([ep["r"] for ep in self.ep_info_buffer])
        # The zero-variance check reads groups: only the group-baselined estimators have them.
        grouped = self.config.advantage_estimator in GROUP_ESTIMATORS
        self.doctor.update(metrics, iteration, group_size=self.config.group_size if grouped else 1)

    def dump_logs(self, iteration: int = 0) -> None:
        """Record the rollout and time metrics (docs/metrics.md) and write every logger output."""
        elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        if len(self.ep_info_buffer) > 0:
            self.logger.record("rollout/ep_rew_mean", safe_mean([ep["r"] for ep in self.ep_info_buffer]))
        for key, value in self._rollout_stats.items():
            self.logger.record(key, value)
        self.logger.record("time/iterations", iteration, exclude="tensorboard")
        self.logger.record("time/fps", (self.num_timesteps - self._num_timesteps_at_start) / elapsed)
        self.logger.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        for key, value in self.doctor.counters.items():
            self.logger.record(key, value)
        self.logger.dump(step=self.num_timesteps)
