"""PPO with a learned critic for language models (PPO arXiv:1707.06347, GAE arXiv:1506.02438, InstructGPT)."""

from __future__ import annotations

import torch
from stable_baselines3.common.utils import explained_variance

from agents.common.advantages import gae, kl_penalty_rewards, masked_whiten
from agents.common.base import LLMAlgorithm
from agents.common.buffers import GroupRolloutBuffer, RolloutSamples, micro_batches
from agents.common.losses import aggregate, policy_loss, value_loss
from agents.common.policies import LLMActorCriticPolicy


class PPO(LLMAlgorithm):
    """PPO for language models: clipped surrogate, clipped value loss, GAE on a KL-penalised token reward.

    One response per prompt (``group_size=1``); a value head ``V(s_t)`` on the policy's trunk
    (:class:`~agents.common.policies.LLMActorCriticPolicy`, ``V(s_t)`` = value of the state before response
    token t). Per rollout:

    1. reward (InstructGPT arXiv:2203.02155 eq. 2, DeepSeekMath arXiv:2402.03300 eq. 2), every real token:
       ``r_t = score_t - beta * (log pi_old(o_t) - log pi_ref(o_t))``, the score being the outcome reward on
       the last token (:func:`~agents.common.advantages.kl_penalty_rewards`);
    2. advantages and returns by GAE (arXiv:1506.02438 eq. 16) with the rollout's values, then whitened over
       the batch's real tokens (``normalize_advantage``);
    3. ``n_epochs`` of minibatch steps on ``L = L_clip + vf_coef * L_V - ent_coef * H`` (PPO eq. 9), with
       the clipped surrogate of eq. 7 and token-mean aggregation; the epochs stop early when a minibatch's
       ``approx_kl`` exceeds ``1.5 * target_kl`` (as SB3).

    The gradient coefficient (DeepSeekMath section 5.2.1, Appendix A.1.5) is the GAE advantage ``A_t``.

    Args:
        policy: ``"LLMPolicy"`` / ``"LLMActorCriticPolicy"`` (both the actor-critic) or a policy class.
            ``policy_kwargs={"separate_critic": True}`` gives the critic its own trunk.
        env: an llm-gym env; as :class:`~agents.common.base.LLMAlgorithm`.
        learning_rate: actor and critic step size (1e-6, as GRPO here; raise it for short CPU runs).
        n_prompts: prompts per rollout (16: one response each, 16 sequences per rollout on 2 CPU cores).
        group_size: responses per prompt (1: the critic is the baseline).
        n_epochs: passes over each rollout (4, TRL's ``num_ppo_epochs``).
        beta: KL coefficient in the reward (0.05, TRL's ``kl_coef``); 0 skips the reference model.
        kl_estimator: estimator of the per-token KL in the reward (``"k1"``, the log-ratio, as InstructGPT).
        loss_aggregation: ``"token-mean"`` (PPO/TRL: every token weighs the same).
        gamma: discount over response tokens (1.0, TRL).
        gae_lambda: GAE lambda (0.95, TRL).
        normalize_advantage: whiten the advantages over the rollout's real tokens (True, TRL / SB3).
        clip_range_vf: value clipping around the rollout's values, reward units (0.2, TRL ``cliprange_value``;
            None = unclipped).
        vf_coef: value-loss weight ``c1`` of PPO eq. 9 (0.1, TRL).
        ent_coef: entropy-bonus weight ``c2`` of PPO eq. 9 (0.0, SB3 and TRL).
        target_kl: stop the epochs when ``approx_kl > 1.5 * target_kl`` (None = never, SB3's default).
        **kwargs: the other :class:`~agents.common.base.LLMAlgorithm` arguments (``batch_size`` None = the
            whole rollout per step, ``micro_batch_size``, ``clip_range=0.2``, ``max_grad_norm=1.0``, ...).

    Raises:
        ValueError: invalid values (each message names the argument).
    """

    policy_aliases = {  # noqa: RUF012
        "LLMPolicy": LLMActorCriticPolicy,
        "LLMActorCriticPolicy": LLMActorCriticPolicy,
    }
    policy: LLMActorCriticPolicy

    def __init__(self, policy, env, learning_rate: float = 1e-6, n_prompts: int = 16, group_size: int = 1,
                 n_epochs: int = 4, beta: float = 0.05, kl_estimator: str = "k1",
                 loss_aggregation: str = "token-mean", gamma: float = 1.0, gae_lambda: float = 0.95,
                 normalize_advantage: bool = True, clip_range_vf: float | None = 0.2, vf_coef: float = 0.1,
                 ent_coef: float = 0.0, target_kl: float | None = None, **kwargs):
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)
        self.normalize_advantage = bool(normalize_advantage)
        self.clip_range_vf = None if clip_range_vf is None else float(clip_range_vf)
        self.vf_coef, self.ent_coef = float(vf_coef), float(ent_coef)
        self.target_kl = None if target_kl is None else float(target_kl)
        super().__init__(policy, env, learning_rate=learning_rate, n_prompts=n_prompts, group_size=group_size,
                         n_epochs=n_epochs, beta=beta, kl_estimator=kl_estimator,
                         loss_aggregation=loss_aggregation, **kwargs)

    def _check_config(self) -> None:
        super()._check_config()
        if not (0 <= self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ValueError(f"gamma and gae_lambda must be in [0, 1], got {self.gamma}, {self.gae_lambda}")
        if self.vf_coef < 0 or self.ent_coef < 0:
            raise ValueError(f"vf_coef and ent_coef must be >= 0, got {self.vf_coef}, {self.ent_coef}")
        if (self.clip_range_vf is not None and self.clip_range_vf <= 0) or (
                self.target_kl is not None and self.target_kl <= 0):
            raise ValueError(f"clip_range_vf and target_kl must be > 0 or None, got {self.clip_range_vf}, "
                             f"{self.target_kl}")

    def _setup_model(self) -> None:
        super()._setup_model()
        self.policy.entropy_grad = self.ent_coef > 0

    @torch.no_grad()
    def _post_rollout(self, buffer: GroupRolloutBuffer, rollout=None) -> None:
        """Rollout values ``V(s_t)`` and KL-penalised token rewards -> ``buffer.values``, ``token_rewards``.

        When several optimizer steps use the rollout, the base already computed the values together with
        ``old_log_probs`` in one forward pass. Otherwise the KL penalty needs pi_old's log-probs: they come
        from the same forward pass that gives the values.
        """
        s = buffer.samples
        need_log_probs = s.old_log_probs is None and self.beta > 0
        values, log_probs = [], []
        for micro in micro_batches(s, self.micro_batch_size) if s.values is None else ():
            if need_log_probs:
                micro_log_probs, _, micro_values = self.policy.evaluate_actions(micro)  # (B, T) x2
                log_probs.append(micro_log_probs)
            else:
                micro_values = self.policy.predict_values(micro)  # (B, T)
            values.append(micro_values)
        b_values = s.values if s.values is not None else torch.cat(values)  # (N, T): base computed them with old
        b_log_probs = torch.cat(log_probs) if need_log_probs else s.old_log_probs  # (N, T) or None
        b_token_rewards, b_kl_penalty = kl_penalty_rewards(
            s.token_rewards, b_log_probs, s.ref_log_probs, s.response_mask, self.beta, self.kl_estimator,
        )  # (N, T), (N, T)
        buffer.update(values=b_values, token_rewards=b_token_rewards)
        self._rollout_stats["rollout/kl_penalty"] = float(b_kl_penalty.sum() / s.response_mask.sum().clamp(min=1))

    def _loss(self, micro: RolloutSamples, log_probs: torch.Tensor, old_log_probs: torch.Tensor,
              values: torch.Tensor, entropy: torch.Tensor | None = None):
        """``L_clip + vf_coef * L_V - ent_coef * H`` of one micro-batch (PPO eq. 9) and its stats.

        Raises:
            RuntimeError: ``ent_coef > 0`` but the entropy was not passed.
        """
        mask = micro.response_mask  # (B, T)
        pg_loss, stats = policy_loss(
            log_probs, old_log_probs, micro.advantages, mask, clip_range=self.clip_range,
            clip_range_high=self.clip_range_high, ref_log_probs=micro.ref_log_probs, beta=0.0,
            kl_estimator=self.kl_estimator, loss_aggregation=self.loss_aggregation, max_len=mask.shape[1])
        vf_loss, vf_stats = value_loss(values, micro.values, micro.returns, mask, self.clip_range_vf,
                                       self.loss_aggregation, max_len=mask.shape[1])
        loss = pg_loss + self.vf_coef * vf_loss
        if self.ent_coef > 0:
            if entropy is None:
                raise RuntimeError("ent_coef > 0 needs the entropy with grad: _gradient_step must pass it to "
                                   "the loss.")
            mb_entropy = aggregate(entropy, mask, self.loss_aggregation, max_len=mask.shape[1])  # ()
            loss = loss - self.ent_coef * mb_entropy
        return loss, {**stats, "value_loss": vf_loss.detach(), **vf_stats}

    def _stop_before_step(self, stats: dict[str, float]) -> bool:
        """SB3's ``target_kl`` rule: skip this minibatch's update and stop when approx_kl > 1.5 * target_kl."""
        return self.target_kl is not None and stats["approx_kl"] > 1.5 * self.target_kl

    def train(self) -> None:
        """GAE advantages (whitened), then epochs of minibatch steps until done or past ``target_kl``."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        b = self.rollout_buffer.samples
        b_advantages, b_returns = gae(b.token_rewards, b.values, b.response_mask, self.gamma,
                                      self.gae_lambda)  # (N, T), (N, T)
        if self.normalize_advantage:
            b_advantages = masked_whiten(b_advantages, b.response_mask)  # (N, T)
        self.rollout_buffer.update(advantages=b_advantages, returns=b_returns)
        all_stats, continue_training = [], True
        for epoch in range(self.n_epochs):
            for mb in self.rollout_buffer.get(self.batch_size):
                all_stats.append(self._gradient_step(mb, self._loss))
                if "early_stop" in all_stats[-1]:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at epoch {epoch}: approx_kl {all_stats[-1]['approx_kl']:.4f}")
                    break
            if not continue_training:
                break
        self._record_train_stats(all_stats)
        mask = b.response_mask.bool()  # (N, T)
        ev = explained_variance(b.values[mask].cpu().numpy(), b_returns[mask].cpu().numpy())
        self.logger.record("train/explained_variance", float(ev))
