"""Multi-turn training: the rollout rows, the KV cache across turns, loss masks, advantages, the engine end to end."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.monitor import Monitor

import llm_gym
from agents import ALGORITHMS, GRPO, PPO
from agents.common.advantages import group_normalized
from agents.common.buffers import RolloutSamples
from agents.common.objective import compute_loss
from agents.common.returns import gae
from agents.common.turns import turn_metrics, turn_rollout_samples
from llm_gym.decoding import ConversationSampler, _left_padded, prefill, sample_responses
from llm_gym.envs.vector import GroupVecEnv
from llm_gym.tasks import Problem
from llm_gym.wrappers import TurnLimit

pytestmark = pytest.mark.usefixtures("one_thread")


def _obs(conv: list[int], assistant: list[int], width: int, pad: int = 0) -> dict[str, np.ndarray]:
    """A left-padded multi-turn observation of width ``width``."""
    n = len(conv)
    ids, mask, amask = np.full(width, pad), np.zeros(width, dtype=np.int64), np.zeros(width, dtype=np.int64)
    ids[width - n:], mask[width - n:], amask[width - n:] = conv, 1, assistant
    return {"input_ids": ids, "attention_mask": mask, "assistant_mask": amask}


# ---------------------------------------------------------------------------- turn_rollout_samples
def test_turn_rollout_samples_places_ids_masks_and_turn_end_rewards():
    # prompt [5 6 7] | turn 1 [10 11 2] | env [20 21] | turn 2 [12 2]: 10 tokens, observation width 12
    conv = [5, 6, 7, 10, 11, 2, 20, 21, 12, 2]
    assistant = [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]
    info = {"prompt_token_count": 3, "turn_spans": [(3, 6), (8, 10)]}
    s = turn_rollout_samples([_obs(conv, assistant, 12)], [info], [[-0.1, 1.0]], prompt_length=4, pad_token_id=0)
    assert s.prompt_ids.tolist() == [[0, 5, 6, 7]] and s.prompt_mask.tolist() == [[0, 1, 1, 1]]
    assert s.response_ids[0, :8].tolist() == [10, 11, 2, 20, 21, 12, 2, 0] and s.response_ids.shape == (1, 12)
    assert s.response_attention_mask[0, :8].tolist() == [1, 1, 1, 1, 1, 1, 1, 0]
    assert s.response_mask[0, :8].tolist() == [1, 1, 1, 0, 0, 1, 1, 0]  # the loss mask: assistant tokens only
    expected = torch.zeros(12)
    expected[2], expected[6] = -0.1, 1.0  # each turn's reward on its last token
    assert torch.allclose(s.token_rewards[0], expected) and s.rewards.tolist() == pytest.approx([0.9])
    assert s.attention_mask is s.response_attention_mask


def test_turn_rollout_samples_empty_turn_and_errors():
    # turn 2 has no tokens (span (8, 8)): its reward goes to the last assistant token before it (index 2)
    conv, assistant = [5, 6, 7, 10, 11, 2, 20, 21], [0, 0, 0, 1, 1, 1, 0, 0]
    info = {"prompt_token_count": 3, "turn_spans": [(3, 6), (8, 8)]}
    s = turn_rollout_samples([_obs(conv, assistant, 10)], [info], [[0.5, 0.25]], prompt_length=3, pad_token_id=0)
    assert s.token_rewards[0, 2].item() == pytest.approx(0.75) and s.token_rewards.sum().item() == pytest.approx(0.75)
    assert s.response_attention_mask[0].sum() == 5 and s.response_mask[0].sum() == 3  # trailing env tokens kept
    with pytest.raises(ValueError, match="more than max_prompt_length=2"):
        turn_rollout_samples([_obs(conv, assistant, 10)], [info], [[0.5, 0.25]], prompt_length=2, pad_token_id=0)
    with pytest.raises(ValueError, match="1 step rewards for 2 turns"):
        turn_rollout_samples([_obs(conv, assistant, 10)], [info], [[0.5]], prompt_length=3, pad_token_id=0)


def test_turn_metrics():
    infos = [{"turns": 1, "env_token_count": 0, "num_tool_calls": 0},
             {"turns": 3, "env_token_count": 10, "num_tool_calls": 2}]
    assert turn_metrics(infos, 0.5) == {"rollout/num_turns": 2.0, "rollout/env_tokens": 5.0,
                                        "rollout/tool_call_fraction": 0.5, "rollout/tool_calls": 1.0,
                                        "time/seconds_per_turn": 0.5}


# ---------------------------------------------------------------------------- ConversationSampler
@pytest.fixture(scope="module")
def model_and_lm(tiny_lm):
    torch.manual_seed(0)
    return tiny_lm.load_model().eval(), tiny_lm


def _conversations(rows: list[list[int]], extra: list[list[int]], sampler: ConversationSampler, turn: torch.Tensor,
                   eos: int, pad: int) -> dict[int, list[int]]:
    """Each row's conversation after a turn: what it had, the turn's real tokens, then an env message."""
    out = {}
    for r in sampler.live.tolist():
        ids = turn[r].tolist()
        ids = ids[:ids.index(eos) + 1] if eos in ids else [t for t in ids if t != pad]
        out[r] = rows[r] + ids + extra[r]
    return out


def _fresh_logits(model, conversations: dict[int, list[int]], pad: int) -> torch.Tensor:
    ids, mask = _left_padded([conversations[r] for r in sorted(conversations)], pad)
    return prefill(model, ids, mask).logits


@pytest.mark.parametrize("reuse_cache", [True, False])
def test_cache_across_turns_gives_the_logits_of_a_fresh_forward(model_and_lm, reuse_cache):
    model, lm = model_and_lm
    prompts = [lm.tokenizer("What is 2+3?")["input_ids"]] * 2 + [lm.tokenizer("Hi there")["input_ids"]] * 2
    ids, mask = _left_padded(prompts, lm.pad_token_id)
    torch.manual_seed(1)
    sampler = ConversationSampler(model, ids, mask, group_size=2, pad_token_id=lm.pad_token_id,
                                  eos_token_id=lm.eos_token_id, reuse_cache=reuse_cache)
    assert sampler.prefilled_tokens == len(prompts[0]) + len(prompts[2])  # one prefill per group
    rows = [list(p) for p in prompts]
    messages = [lm.tokenizer(m)["input_ids"] for m in ("lower", "the tool says 7", "higher!", "x")]
    for _ in range(2):
        before = sampler.prefilled_tokens
        turn = sampler.sample_turn(6)
        conversations = _conversations(rows, messages, sampler, turn, lm.eos_token_id, lm.pad_token_id)
        sampler.extend(conversations)
        tails = sum(len(conversations[r]) - len(rows[r]) for r in conversations)
        fed_in_turn = sum(int((turn[r] != lm.pad_token_id).sum()) - 1 for r in conversations)
        added = sampler.prefilled_tokens - before
        # reuse: only the turn's last token and the message are prefilled; else the whole conversation
        assert added == (tails - fed_in_turn if reuse_cache else sum(len(c) for c in conversations.values()))
        torch.testing.assert_close(sampler.state.logits, _fresh_logits(model, conversations, lm.pad_token_id),
                                   atol=2e-5, rtol=1e-4)
        rows = [conversations[r] for r in range(4)]
    assert sampler.n_rebuilds == 0


def test_an_edited_conversation_rebuilds_the_cache_and_ended_rows_leave(model_and_lm):
    model, lm = model_and_lm
    prompts = [lm.tokenizer(p)["input_ids"] for p in ("abc", "defgh", "ij")]
    ids, mask = _left_padded(prompts, lm.pad_token_id)
    sampler = ConversationSampler(model, ids, mask, pad_token_id=lm.pad_token_id, eos_token_id=lm.eos_token_id)
    sampler.sample_turn(4)
    edited = {0: prompts[0] + [lm.tokenizer("zz")["input_ids"][0]] * 3, 1: None, 2: prompts[2] + [7, 8]}
    sampler.extend(edited)  # row 0 does not continue what was fed (the env changed the turn): rebuild
    assert sampler.n_rebuilds == 1 and sampler.live.tolist() == [0, 2]
    torch.testing.assert_close(sampler.state.logits, _fresh_logits(model, {0: edited[0], 2: edited[2]},
                                                                   lm.pad_token_id), atol=2e-5, rtol=1e-4)
    turn = sampler.sample_turn(3)
    assert (turn[1] == lm.pad_token_id).all()  # an ended episode gets no tokens


def test_greedy_turns_equal_greedy_generation_on_the_conversation(model_and_lm):
    """Turn 1 and turn 2 (over the cache with its gaps) sample what greedy decoding of the whole prefix samples."""
    model, lm = model_and_lm
    prompts = [lm.tokenizer(p)["input_ids"] for p in ("What is 12*3?", "Guess!", "ok")]
    ids, mask = _left_padded(prompts, lm.pad_token_id)
    sampler = ConversationSampler(model, ids, mask, pad_token_id=lm.pad_token_id, eos_token_id=lm.eos_token_id,
                                  do_sample=False)
    turn1 = sampler.sample_turn(8)
    assert torch.equal(turn1, sample_responses(model, ids, mask, 8, lm.eos_token_id, lm.pad_token_id,
                                               do_sample=False))
    messages = [lm.tokenizer(m)["input_ids"] for m in ("= 36", "lower", "")]
    conversations = _conversations([list(p) for p in prompts], messages, sampler, turn1, lm.eos_token_id,
                                   lm.pad_token_id)
    sampler.extend(conversations)
    turn2 = sampler.sample_turn(8)
    ids2, mask2 = _left_padded([conversations[r] for r in range(3)], lm.pad_token_id)
    assert torch.equal(turn2, sample_responses(model, ids2, mask2, 8, lm.eos_token_id, lm.pad_token_id,
                                               do_sample=False))


# ---------------------------------------------------------------------------- the engine on multi-turn envs
GUESS = {"device": "cpu", "max_new_tokens": 6, "max_prompt_length": None, "max_turns": 3, "max_message_tokens": 64}


@pytest.fixture
def guess_vec_env(tiny_model_dir):
    return llm_gym.make_group_vec_env("LLMGuessNumber-v0", n_envs=4, model=str(tiny_model_dir), **GUESS)


def _train(cls, env, **kwargs) -> tuple:
    model = cls("LLMPolicy" if cls is not PPO else "LLMActorCriticPolicy", env, seed=0, **kwargs)
    model.learn(4)
    return model, model.rollout_buffer.samples


def test_grpo_rollout_rows_are_the_episodes_with_one_advantage_per_episode(guess_vec_env):
    model, s = _train(GRPO, guess_vec_env, n_prompts=2, group_size=2)
    assert max(i["turns"] for i in s.infos) >= 2  # several turns in some episode
    for i, info in enumerate(s.infos):
        n_real = info["assistant_token_count"] + info["env_token_count"]
        assert s.response_attention_mask[i].sum() == n_real  # accounting: turns + env messages
        assert s.response_mask[i].sum() == info["assistant_token_count"]  # loss mask: the policy's tokens
    returns = [ep["r"] for ep in list(model.ep_info_buffer)[-4:]]  # Monitor: the summed step rewards
    assert s.rewards.tolist() == pytest.approx(returns)
    expected = group_normalized(s.rewards, s.group_ids)  # (N,) DeepSeekMath 4.1.2
    on = s.response_mask.bool()
    for i in range(4):
        assert torch.allclose(s.advantages[i][on[i]], expected[i].expand(int(on[i].sum())))
    assert (s.advantages[~on] == 0).all()
    stats = model._rollout_stats
    assert stats["rollout/num_turns"] == pytest.approx(np.mean([i["turns"] for i in s.infos]))
    assert stats["time/seconds_per_turn"] > 0


def test_ppo_gae_runs_over_assistant_tokens_with_rewards_at_turn_ends(guess_vec_env):
    model, s = _train(PPO, guess_vec_env, n_prompts=4, group_size=1, batch_size=4, beta=0.0)
    for i in range(4):
        on = s.response_mask[i].bool()
        # the env's tokens removed: a plain single-sequence GAE over the assistant tokens, rewards at turn ends
        _, returns = gae(s.token_rewards[i][on][None], s.values[i][on][None], torch.ones(1, int(on.sum())),
                         model.config.gamma, model.config.gae_lambda)
        # PPO whitens the advantages over the batch: the returns (the critic's targets) are compared
        assert torch.allclose(s.returns[i][on], returns[0], atol=1e-5)
        assert (s.returns[i][~on] == 0).all() and (s.advantages[i][~on] == 0).all()
    ends = [span[1] - 1 - info["prompt_token_count"] for info in s.infos for span in info["turn_spans"][:1]]
    assert all(s.response_mask[i, e] == 1 for i, e in enumerate(ends))


def _with_trailing_env_tokens(s: RolloutSamples, ids: list[int]) -> RolloutSamples:
    """The rows with env tokens appended after their last token (as a TurnLimit truncation leaves them)."""
    response_ids, attention = s.response_ids.clone(), s.response_attention_mask.clone()
    for i in range(s.n_sequences):
        n = int(attention[i].sum())
        response_ids[i, n:n + len(ids)], attention[i, n:n + len(ids)] = torch.as_tensor(ids), 1.0
    return s._replace(response_ids=response_ids, response_attention_mask=attention)


def _gradient(model, samples: RolloutSamples) -> torch.Tensor:
    model.policy.optimizer.zero_grad(set_to_none=True)
    log_probs, entropy, values = model.policy.evaluate_actions(samples)
    loss, _ = compute_loss(model.config, samples, log_probs, log_probs.detach() + 0.01, values, entropy)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.policy.parameters() if p.grad is not None])


@pytest.mark.parametrize("algo", ["grpo", "dapo", "gspo", "ppo", "cispo"])
def test_env_tokens_get_no_gradient(guess_vec_env, algo):
    """Perturbing env-inserted tokens that no assistant token reads leaves the policy gradient unchanged; and the
    loss's gradient with respect to the log-probs (and values) is exactly 0 on every env token."""
    cls = ALGORITHMS[algo]
    kwargs = {"n_prompts": 4, "group_size": 1, "batch_size": 4} if cls is PPO else {"n_prompts": 2, "group_size": 2}
    model, s = _train(cls, guess_vec_env, **kwargs)
    s = s._replace(advantages=torch.randn_like(s.advantages) * s.response_mask)  # informative in any case
    a = _gradient(model, _with_trailing_env_tokens(s, [5, 6, 7]))
    b = _gradient(model, _with_trailing_env_tokens(s, [9, 3, 11]))
    assert a.abs().sum() > 0
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    raw = torch.randn(s.response_mask.shape, requires_grad=True)  # log-probs, non-zero on env tokens too
    values = torch.randn(s.response_mask.shape, requires_grad=True) if cls is PPO else None
    loss, _ = compute_loss(model.config, s, raw, raw.detach() - 0.05, values, None)
    grads = torch.autograd.grad(loss, [raw] + ([values] if values is not None else []))
    env = s.response_attention_mask.bool() & ~s.response_mask.bool()
    assert env.any() and all((g[env] == 0).all() for g in grads)
    assert grads[0][s.response_mask.bool()].abs().sum() > 0


def test_env_tokens_are_read_by_later_turns(guess_vec_env):
    """The model attends to env messages: changing one changes the log-probs of the turn after it."""
    model, s = _train(GRPO, guess_vec_env, n_prompts=2, group_size=2)
    row = next(i for i, info in enumerate(s.infos) if info["turns"] >= 2)
    env = (s.response_attention_mask[row].bool() & ~s.response_mask[row].bool()).nonzero().squeeze(1)
    changed = s.response_ids.clone()
    changed[row, env[0]] = (changed[row, env[0]] + 1) % 50
    with torch.no_grad():
        lp, _, _ = model.policy.evaluate_actions(s)
        lp2, _, _ = model.policy.evaluate_actions(s._replace(response_ids=changed))
    later = s.response_mask[row].bool() & (torch.arange(lp.shape[1]) > env[0])
    assert not torch.allclose(lp[row][later], lp2[row][later])
    assert torch.equal(lp[row][: env[0]], lp2[row][: env[0]])  # causal: the turn before is unchanged


def test_seeded_multiturn_training_is_reproducible(tiny_model_dir):
    def run():
        env = llm_gym.make_group_vec_env("LLMGuessNumber-v0", n_envs=4, model=str(tiny_model_dir), **GUESS)
        model, s = _train(GRPO, env, n_prompts=2, group_size=2)
        return s, torch.cat([p.detach().flatten() for p in model.policy.parameters()])

    (s1, w1), (s2, w2) = run(), run()
    assert torch.equal(s1.response_ids, s2.response_ids) and torch.equal(w1, w2)


def test_a_single_env_from_gym_make_is_batched(tiny_model_dir):
    env = gym.make("LLMGuessNumber-v0", model=str(tiny_model_dir), **GUESS)
    model = GRPO("LLMPolicy", env, n_prompts=2, group_size=2, seed=0)
    assert isinstance(model.env, GroupVecEnv) and model.env.num_envs == 4
    assert model.env.envs[0] is env  # the user's env is the first copy (Monitor's statistics: at the vector level)
    assert model.env.env_is_wrapped(Monitor) == [True] * 4
    limited = GRPO("LLMPolicy", TurnLimit(gym.make("LLMGuessNumber-v0", model=str(tiny_model_dir), **GUESS), 2),
                   n_prompts=2, group_size=2, seed=0)  # a wrapper that records its arguments is rebuilt
    assert limited.env.num_envs == 4 and all(isinstance(e, TurnLimit) for e in limited.env.envs)
    class Plain(gym.Wrapper):  # does not record its arguments: a spec cannot rebuild it
        pass

    with pytest.warns(UserWarning, match="one at a time"):
        single = GRPO("LLMPolicy", Plain(TurnLimit(gym.make("LLMGuessNumber-v0", model=str(tiny_model_dir),
                                                            **GUESS), 2)), n_prompts=2, group_size=2, seed=0)
    assert single.env.num_envs == 1
    single.learn(4)
    assert all(info["turns"] <= 2 for info in single.rollout_buffer.samples.infos)


def test_tool_episode_scripted_end_to_end(tiny_model_dir, monkeypatch):
    """A sampler that calls the calculator, then answers: reward per turn, the tool's result inside the row."""
    problem = Problem(id="p/0", question="What is 12 * 34?", answer="408")
    env = llm_gym.make_group_vec_env("LLMToolMath-v0", n_envs=2, model=str(tiny_model_dir), device="cpu",
                                     dataset=[problem], max_prompt_length=None, max_new_tokens=24,
                                     tool_call_cost=0.1, wrapper_class=None)
    lm = env.get_attr("lm")[0]
    turns = ["<calc>12*34</calc>", "So \\boxed{408}"]

    def scripted(self, max_new_tokens):
        k = self.calls = getattr(self, "calls", 0) + 1
        ids = lm.tokenizer(turns[min(k, 2) - 1])["input_ids"] + [lm.eos_token_id]
        out = torch.full((self.n_rows, max_new_tokens), lm.pad_token_id)
        out[self.live, :len(ids)] = torch.as_tensor(ids)
        return out

    monkeypatch.setattr(ConversationSampler, "sample_turn", scripted)
    model = GRPO("LLMPolicy", env, n_prompts=1, group_size=2, seed=0)
    model.learn(2)
    s = model.rollout_buffer.samples
    assert s.rewards.tolist() == pytest.approx([0.9, 0.9])  # -0.1 for the call, +1 for the answer
    for i, info in enumerate(s.infos):
        first_end, second_end = (e - 1 - info["prompt_token_count"] for _, e in info["turn_spans"])
        assert s.token_rewards[i, first_end] == pytest.approx(-0.1) and s.token_rewards[i, second_end] == 1.0
        env_ids = s.response_ids[i][s.response_attention_mask[i].bool() & ~s.response_mask[i].bool()]
        assert "12*34 = 408" in lm.tokenizer.decode(env_ids.tolist())
        assert info["num_tool_calls"] == 1
    assert model._rollout_stats["rollout/tool_call_fraction"] == 1.0
    assert model._rollout_stats["rollout/reward/tool_cost"] == pytest.approx(-0.1)


def test_evaluate_accuracy_plays_whole_episodes_in_batches(tiny_model_dir):
    from agents.common.evaluation import evaluate_accuracy

    env = gym.make("LLMGuessNumber-v0", model=str(tiny_model_dir), **GUESS)
    model = env.unwrapped.lm.load_model()
    batched = evaluate_accuracy(model, env, n_problems=5, batch_size=4)
    single = evaluate_accuracy(model, env, n_problems=5, batch_size=1)
    assert [x[1] for x in batched["samples"]] == [x[1] for x in single["samples"]]  # same conversations
    for key in ("accuracy", "reward_mean", "response_length", "num_turns", "truncated_fraction"):
        assert batched[key] == pytest.approx(single[key])
    env.reset(options={"problem_id": 3})  # problem 3 by hand: its turns as the evaluation counted them
    turns = batched["samples"][3][1].count("<|im_start|>assistant") - batched["samples"][3][1].endswith(
        "<|im_start|>assistant\n")
    assert batched["n"] == 5 and len(batched["samples"]) == 5 and 1 <= turns <= GUESS["max_turns"]


def test_dapo_overlong_shaping_charges_every_turn_of_an_episode():
    from agents import DAPO
    from agents.common.objective import length_shaping

    # prompt [5] | turn 1: 6 tokens | env [20 21] | turn 2: 8 tokens; budget 8 per turn, buffer 4 (DAPO eq. 13):
    # turn 1: -(6 - 4) / 4 = -0.5, turn 2: -(8 - 4) / 4 = -1.0; the episode pays -1.5 on its last token
    conv = [5] + [10] * 6 + [20, 21] + [11] * 8
    assistant = [0] + [1] * 6 + [0, 0] + [1] * 8
    info = {"prompt_token_count": 1, "turn_spans": [(1, 7), (9, 17)], "truncated_by_length": True}
    s = turn_rollout_samples([_obs(conv, assistant, 20)], [info], [[0.0, 1.0]], prompt_length=1, pad_token_id=0)
    updates, stats = length_shaping(DAPO.default_config(), s, budget=8, overlong_buffer=4)
    assert updates["rewards"].tolist() == pytest.approx([1.0 - 1.5])
    assert updates["token_rewards"][0, 15].item() == pytest.approx(1.0 - 1.5)  # the last assistant token
    assert stats["rollout/overlong_penalty"] == pytest.approx(-1.5)


def test_on_step_locals_hold_rewards_aligned_with_dones(guess_vec_env):
    """Multi-turn ``_on_step`` sees ``rewards`` as SB3 callbacks expect; summed per episode they equal the
    episode returns of the rollout."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Spy(BaseCallback):
        def __init__(self):
            super().__init__()
            self.returns = np.zeros(4)

        def _on_step(self) -> bool:
            rewards, dones = self.locals["rewards"], self.locals["dones"]
            assert len(rewards) == len(dones) == len(self.locals["infos"]) == 4
            self.returns += [0.0 if info.get("waiting") else r for r, info in zip(rewards, self.locals["infos"], strict=True)]
            return True

    spy = Spy()
    model = GRPO("LLMPolicy", guess_vec_env, seed=0, n_prompts=2, group_size=2)
    model.learn(4, callback=spy)
    assert spy.returns.tolist() == pytest.approx(model.rollout_buffer.samples.rewards.tolist())
