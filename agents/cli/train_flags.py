"""The flags of ``llm-gym train`` (= ``scripts/train.py``): one per AlgorithmConfig field, plus the job's own.

:func:`parse_args` checks every flag before anything loads; :data:`DESCRIPTION` is the ``--help`` text.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents import ALGORITHMS, AlgorithmConfig
from agents.common.config import field_docs
from agents.env_ids import (
    EnvError,
    bare_id,
    check_env_id,
    entry_point_class,
    fit_kwargs,
    parse_env_kwargs,
    require_llm_env,
    split_dataset,
)
from llm_gym.tasks.arithmetic import LEVELS
from llm_gym.validation import check_real

DESCRIPTION = """Train a language model with RL on an llm-gym env: the README's main job.

Evaluates greedy accuracy on a held-out split, trains (progress bar, TensorBoard logs), evaluates
again, saves the algorithm (SB3 zip) and a plain Hugging Face folder, and writes a results JSON.

Every field of agents.AlgorithmConfig is a flag (``--learning-rate``, ``--clip-range-high``,
``--dynamic-sampling/--no-dynamic-sampling``, ...). The defaults are the preset of ``--algo`` with the CPU
profile on top (a higher learning rate, temperature 0.7, a 320-response budget, so ten updates show a
change, and bf16 autocast; the whole GRPO job, both evaluations included, takes about 9 minutes on 2 CPU cores);
``--algo X --help`` prints the true defaults of X.

Examples (``llm-gym train ...`` is the same command)::

    python scripts/train.py --algo grpo --env LLMMath-v0
    python scripts/train.py --algo ppo --env LLMMathToken-v0     # token level, critic, KL in the reward
    python scripts/train.py --env LLMToolMath-v0                 # multi-turn: a calculator tool (docs/envs.md)
    python scripts/train.py --env LLMTextArena-v0 --env-kwargs '{"game": "GuessTheNumber-v0"}'
    python scripts/train.py --env my_package.envs:MyGame-v0      # any env built on llm-gym's bases
    python scripts/train.py --algo dapo --batch-size 8           # clip-higher, dynamic sampling, overlong penalty
    python scripts/train.py --algo rloo --batch-size 8           # leave-one-out baseline
    python scripts/train.py --algo grpo --help                   # every flag with its default for GRPO
    python scripts/train.py --mixed-precision bf16 --lora-r 16   # bf16 autocast, LoRA adapters (peft)
    torchrun --nproc_per_node 2 scripts/train.py --algo grpo     # data parallel (docs/scaling.md)
    torchrun --nproc_per_node 2 scripts/train.py --fsdp          # sharded parameters and optimizer state
    tensorboard --logdir runs/

Every flag is checked before the model loads (a bad value exits at once, naming the flag; no value is
replaced by another), the model is saved before the evaluation after training (an evaluation error cannot
lose a finished training), and ``--resume`` refuses flags that contradict the checkpoint
(docs/troubleshooting.md, "Flags and resuming").
"""

#: The CPU profile: what the main job changes from every preset, so a 135M model shows learning in ten updates
#: on 2 cores (docs/benchmarks.md has the runs). Per algorithm, then for all.
CPU_PROFILE: dict[str, dict] = {
    # bf16 autocast: a faster step, and over 3 seeds it kept the held-out accuracy that fp32 lost with the
    # current sampler (docs/benchmarks.md). --mixed-precision no for CPUs without bf16 support.
    "all": {"learning_rate": 2e-5, "temperature": 0.7, "total_timesteps": 320, "mixed_precision": "bf16"},
    # PPO: 32 prompts x 1 response, 2 epochs of 2 minibatches; 7100 tokens = what the GRPO default generates.
    "ppo": {"n_prompts": 32, "n_epochs": 2, "batch_size": 16, "learning_rate": 1e-5, "total_timesteps": 7100},
}


def algorithm_defaults(algo: str) -> dict:
    """The true defaults of ``--algo``: its preset (:meth:`LLMAlgorithm.default_config`) plus the CPU profile."""
    return {**ALGORITHMS[algo].default_config().to_dict(), **CPU_PROFILE["all"], **CPU_PROFILE.get(algo, {})}


def bounded(kind: type, minimum: float | None = None, maximum: float | None = None, *, min_inclusive: bool = True,
            max_inclusive: bool = True) -> Callable[[str], int | float]:
    """An argparse ``type=``: the flag's text parsed as ``kind`` (``int`` or ``float``) and checked against a range.

    An int flag takes whole numbers only (``"1.5"`` and ``"1e3"`` are refused, never rounded); a float flag
    takes finite numbers only (``nan``, ``inf`` are refused). argparse puts the flag in front of the message
    and exits with status 2 before anything loads: ``argument --eval-batch-size: must be an integer >= 1,
    got 0.``

    >>> bounded(int, 1)("8"), bounded(float, 0, 1)("0.25")
    (8, 0.25)
    """
    def parse(text: str) -> int | float:
        try:
            value = int(text) if kind is int else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if kind is int:
            if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
                span = (f"in {minimum}..{maximum}" if minimum is not None and maximum is not None else
                        f">= {minimum}" if minimum is not None else f"<= {maximum}")
                raise argparse.ArgumentTypeError(f"must be an integer {span}, got {text}.")
            return value
        try:
            return check_real("value", value, minimum, maximum, min_inclusive=min_inclusive,
                              max_inclusive=max_inclusive)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value ")) from None

    parse.__name__ = "integer" if kind is int else "number"
    return parse


POSITIVE_INT = bounded(int, 1)
NON_NEGATIVE_INT = bounded(int, 0)


def _flag_type(annotation: str):
    """``(argparse type, nullable)`` of a config field from its annotation string (``"int | None"``...)."""
    nullable = "None" in annotation
    base = annotation.replace("| None", "").strip()
    kind = {"int": int, "float": float, "str": str, "bool": bool}[base]
    if not nullable or kind is bool:
        return kind, nullable

    def parse(text: str):
        return None if text.strip().lower() == "none" else kind(text)

    parse.__name__ = f"{kind.__name__} or none"  # argparse: "invalid int or none value: '1.5'"
    return parse, nullable


def add_config_flags(p: argparse.ArgumentParser, defaults: dict) -> None:
    """One flag per :class:`AlgorithmConfig` field; help = the field's docstring and the true default."""
    docs = field_docs()
    group = p.add_argument_group("algorithm (agents.AlgorithmConfig; defaults: the --algo preset + CPU profile)")
    for f in dataclasses.fields(AlgorithmConfig):
        kind, nullable = _flag_type(str(f.type))
        flag = "--" + f.name.replace("_", "-")
        default = defaults[f.name]
        text = f"{docs[f.name]} (default: {default}{'; none = None' if nullable else ''})"
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        else:
            group.add_argument(flag, type=kind, default=default, help=text.replace("%", "%%"))


def add_reward_model_flags(p: argparse.ArgumentParser) -> None:
    """Learned rewards (--reward-model, --process-reward-model) and iterative RL on them (--iterative...)."""
    add = p.add_argument_group("reward models and iterative RL").add_argument
    add("--process-reward-model", default=None,
        help="Folder of a process reward model (scripts/train_reward_model.py --kind process) whose per-step "
             "scores are the training env's step rewards (use with --advantage process).")
    add("--iterative", action="store_true",
        help="Iterative RL (DeepSeekMath 4.1.4) with --reward-model or --process-reward-model: retrain it on "
             "each --iterative-every-th rollout's samples, labelled by the rule checker (answer check; for a "
             "process model the grounded step checker), with --replay-fraction replayed, and reset the "
             "reference model to the policy.")
    add("--iterative-every", type=POSITIVE_INT, default=1, help="--iterative: retrain on every n-th rollout.")
    add("--replay-fraction", type=bounded(float, 0, 1, max_inclusive=False), default=0.1,
        help="--iterative: share of earlier samples in each retraining set, in [0, 1) (DeepSeekMath: 10 %%).")
    add("--replay-from", default=None,
        help="--iterative: a scripts/train_reward_model.py output folder whose train_samples.jsonl (the reward "
             "model's own training data) seeds the replay store, so replay reaches back past this run.")
    add("--iterative-epochs", type=POSITIVE_INT, default=1,
        help="--iterative: epochs over each retraining set (continual training from the current weights).")
    add("--iterative-balance-classes", action="store_true",
        help="--iterative: weight the retraining loss so right and wrong samples count equally, as "
             "scripts/train_reward_model.py --balance-classes does (a rollout holds few right answers).")
    add("--reward-model", default=None,
        help="Folder of a sequence-classification reward model (scripts/train_reward_model.py) that replaces the "
             "training env's rule reward; held-out accuracy is still rule-checked.")


def add_env_flags(p: argparse.ArgumentParser) -> None:
    """The training and held-out envs: env id, task, budgets, levels, format and step rewards."""
    add = p.add_argument
    add("--env", default="LLMMath-v0",
        help="Env id: llm-gym's (LLMMath-v0, LLMMathToken-v0, multi-turn LLMToolMath-v0, LLMGuessNumber-v0, "
             "LLMTextArena-v0, LLMOpenEnv-v0; GSM8K is test-only), a plugin's (an llm_gym.envs entry point) or "
             "module:EnvId (importing module registers EnvId). It must be built on llm-gym's env bases.")
    add("--env-kwargs", default=None,
        help="More keywords of the env, a JSON object: '{\"game\": \"Wordle-v0\"}' for LLMTextArena-v0, "
             "'{\"base_url\": \"http://127.0.0.1:8000\"}' for LLMOpenEnv-v0, '{\"dataset\": {\"train\": "
             "\"train.jsonl\", \"test\": \"test.jsonl\"}}' for your problems (a mapping of splits: the "
             "held-out evaluation reads the test entry).")
    add("--task", default=None,
        help="Problem source of a math env (llm_gym.tasks.TASKS, e.g. arithmetic_tool: LLMMath-v0 on the tool "
             "env's problems, without the tool; env default otherwise).")
    add("--max-prompt-length", type=POSITIVE_INT, default=None, help="Prompt budget in tokens (env default).")
    add("--prompt-template", default=None,
        help="The user message, with {question} where the question goes (train and held-out env; default: "
             "the env's, '{question}\\nPut your final answer within \\boxed{}.'; literal braces doubled).")
    add("--max-turns", type=POSITIVE_INT, default=None, help="Multi-turn envs: most assistant turns per episode.")
    add("--tool-call-cost", type=bounded(float, 0), default=None,
        help="LLMToolMath-v0: reward subtracted per calculator call (>= 0).")
    add("--model", default=None, help="HF folder, .gguf file or hub id; default SmolLM2-135M-Instruct.")
    add("--difficulty", type=bounded(int, min(LEVELS), max(LEVELS)), nargs="+", default=None,
        help=f"Arithmetic levels, {min(LEVELS)}..{max(LEVELS)} (env default: 1 2).")
    add("--max-new-tokens", type=POSITIVE_INT, default=None, help="Response budget in tokens (env default: 64).")
    add("--format-weight", type=bounded(float, 0), default=None,
        help="Weight of the \\boxed{} format reward (>= 0; env default: 0).")
    add("--process-reward", default="none", choices=["none", "arithmetic", "arithmetic-errors", "grounded"],
        help="Step rewards of the training env (info['step_rewards']; use with --advantage process): "
             "'arithmetic' pays 1 for every correct 'expression = value' line and 0 for a wrong one, "
             "'arithmetic-errors' pays 0 and -1 (only errors are penalised), 'grounded' pays 1 only for true "
             "steps built from the question's numbers or earlier results in a response that reaches the answer "
             "and --step-penalty for false, unrelated or restating steps and a wrong final step "
             "(llm_gym.rewards.grounded_arithmetic_step_reward).")
    add("--step-penalty", type=bounded(float, None, 0), default=-1.0,
        help="--process-reward grounded: the penalty value (<= 0).")


def add_run_flags(p: argparse.ArgumentParser, defaults: dict) -> None:
    """Budget, evaluation, seed, device, outputs, checkpoints and resuming."""
    add = p.add_argument
    add("--total-timesteps", type=POSITIVE_INT, default=defaults["total_timesteps"],
        help="Env steps to train on in total: responses (sequence envs) or tokens (token envs); rounded up to whole "
             f"rollouts (default: {defaults['total_timesteps']}).")
    add("--no-eval-before", action="store_true",
        help="Skip the evaluation before training (the base model's figure is the same for every algorithm).")
    add("--eval-n", type=NON_NEGATIVE_INT, default=200,
        help="Held-out problems for the before/after evaluation (0 = skip).")
    add("--eval-batch-size", type=POSITIVE_INT, default=50, help="Sequences per generate call during evaluation.")
    add("--seed", type=bounded(int, 0, 2**32 - 1), default=0,
        help="Seed of Python, NumPy, torch, the env and problem draws (0..2**32-1).")
    add("--device", default="auto", help="auto (CUDA if present), cpu or cuda.")
    add("--tensorboard-log", default="runs", help="TensorBoard folder ('' = off).")
    add("--run-name", default=None, help="TensorBoard run / output name (default: <ALGO>_<env>).")
    add("--output-dir", default="outputs", help="Where the zip, the HF folder and results.json go.")
    add("--no-progress-bar", action="store_true", help="Hide the progress bar.")
    add("--save-freq", type=NON_NEGATIVE_INT, default=0,
        help="Save a checkpoint every this many iterations into <output-dir>/<run-name>/checkpoints/ (at iteration "
             "boundaries, so --resume continues exactly; 0 = only the final model.zip).")
    add("--resume", default=None,
        help="Continue from a checkpoint (model.zip or checkpoints/model_*.zip) to --total-timesteps in total with "
             "the checkpoint's algorithm, config, seed, LoRA and model; a flag that contradicts it is refused. "
             "The evaluation before training is skipped.")
    add("--no-doctor", action="store_true",
        help="Turn off the training doctor (warnings with fixes when a run goes wrong; docs/troubleshooting.md); "
             "with --resume it applies to the resumed run.")
    add("--verbose", type=bounded(int, 0, 2), default=1, help="0 silent, 1 prints the metrics table each rollout.")


def add_lora_flags(p: argparse.ArgumentParser) -> None:
    """LoRA adapters (peft)."""
    add = p.add_argument_group("LoRA (peft)").add_argument
    add("--lora-r", type=NON_NEGATIVE_INT, default=0,
        help="LoRA rank (peft.LoraConfig r); 0 = full fine-tuning. Only the adapters are trained; the reference "
             "model is the base with the adapters disabled.")
    add("--lora-alpha", type=bounded(float, 0, min_inclusive=False), default=None,
        help="LoRA scaling alpha, > 0 (default: 2 x --lora-r).")
    add("--lora-dropout", type=bounded(float, 0, 1, max_inclusive=False), default=0.0,
        help="Dropout on the LoRA path, in [0, 1).")
    add("--lora-target-modules", nargs="+", default=None,
        help="Module names that get adapters, or 'all-linear' (default: peft's choice for the architecture, "
             "q_proj and v_proj for Llama).")


def build_parser(algo: str = "grpo", prog: str | None = None) -> argparse.ArgumentParser:
    """Every flag with its meaning and its default for ``algo``; the same text is ``--help``.

    Args:
        algo: The preset whose defaults the flags show (``--algo``).
        prog: The program name in usage lines (``"llm-gym train"``); None = argparse's (the script's name).
    """
    defaults = algorithm_defaults(algo)
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", default="grpo", choices=sorted(ALGORITHMS), help="Preset (agents.ALGORITHMS).")
    add_env_flags(p)
    add_run_flags(p, defaults)
    add_reward_model_flags(p)
    add_lora_flags(p)
    add_config_flags(p, defaults)
    return p


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """Parse in two passes: ``--algo`` first, then every flag with that algorithm's defaults.

    Every flag is checked here, before anything loads: each numeric flag by its ``type=``
    (:func:`bounded`), the algorithm flags together as :class:`AlgorithmConfig` and the preset check them
    (:func:`check_config_flags`), the env id and its keywords by :func:`check_env_flags`. A bad value exits
    with status 2 and a message naming the flag. ``args.env_kwargs`` holds the ``--env-kwargs`` object (a dict).
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo", default="grpo", choices=sorted(ALGORITHMS))
    known, _ = pre.parse_known_args(argv)
    parser = build_parser(known.algo, prog)
    args = parser.parse_args(argv)
    check_config_flags(parser, args)
    check_env_flags(parser, args)
    check_output_flags(parser, args)
    return args


def run_folder(args: argparse.Namespace) -> Path:
    """``<output-dir>/<run-name>``; the run name defaults to ``<ALGO>_<env>`` (the bare env id)."""
    return Path(args.output_dir) / (args.run_name or f"{args.algo.upper()}_{bare_id(args.env).replace('/', '_')}")


#: What the run folder holds after a run: name -> True for a folder, False for a file.
RUN_FILES = {"model.zip": False, "model_last.zip": False, "results.json": False, "hf_model": True,
             "checkpoints": True}


def _path_problem(path: Path, folder: bool) -> str | None:
    """Why ``path`` cannot be written as a folder (``folder``) or a file, or None when it can."""
    if path.exists():
        if path.is_dir() != folder:
            return f"{path} exists and is a {'file' if folder else 'folder'}"
        return None if os.access(path if folder else path.parent, os.W_OK) else f"{path} is not writable"
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        return f"{parent} is a file, so {path} cannot be made"
    return None if os.access(parent, os.W_OK) else f"{parent} is not writable, so {path} cannot be made"


def check_output_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit (status 2) before anything loads when a run's outputs could not be written after training.

    Checks ``--output-dir``, the run folder and what a run writes in it (:data:`RUN_FILES`), and
    ``--tensorboard-log``: each must be a folder or file of the right kind, or makeable, and writable.
    """
    out = run_folder(args)
    checks = [(Path(args.output_dir), True, "--output-dir"), (out, True, "--output-dir/--run-name")]
    checks += [(out / name, folder, "--output-dir/--run-name") for name, folder in RUN_FILES.items()]
    if args.tensorboard_log:
        checks.append((Path(args.tensorboard_log), True, "--tensorboard-log"))
    for path, folder, flag in checks:
        problem = _path_problem(path, folder)
        if problem:
            parser.error(f"{flag}: {problem}; the run's outputs could not be saved after training. Choose "
                         f"another path.")


#: The env keywords the job's flags set: keyword -> flag. A flag left out (None) is the env's default.
ENV_FLAGS = {"task": "--task", "difficulty": "--difficulty", "max_new_tokens": "--max-new-tokens",
             "format_weight": "--format-weight", "max_prompt_length": "--max-prompt-length",
             "max_turns": "--max-turns", "tool_call_cost": "--tool-call-cost", "prompt_template": "--prompt-template"}
#: The test-only envs: training on them would evaluate on the training set.
TEST_ONLY_ENV_IDS = ("LLMGSM8K-v0", "LLMGSM8KToken-v0")


def env_keywords(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """``(kwargs, given)``: the env keywords of the flags (no split, no reward), and ``keyword -> flag`` of those
    the user asked for (which the env must take, :func:`~agents.env_ids.fit_kwargs`), reward flags included."""
    kwargs: dict[str, Any] = {"model": args.model, "device": args.device}
    given: dict[str, str] = {}
    for key, flag in ENV_FLAGS.items():
        if getattr(args, key) is not None:  # any value given is passed as it is
            kwargs[key] = tuple(args.difficulty) if key == "difficulty" else getattr(args, key)
            given[key] = flag
    if args.reward_model:
        given["reward_fn"] = "--reward-model"
    if args.process_reward != "none" or args.process_reward_model:
        given["process_reward_fn"] = "--process-reward" if args.process_reward != "none" else "--process-reward-model"
    given |= dict.fromkeys(args.env_kwargs, "--env-kwargs")
    return kwargs | args.env_kwargs, given


def check_env_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check ``--env`` and the env keywords before the model loads (``args.env_kwargs`` becomes a dict).

    The id must resolve (:func:`~agents.env_ids.check_env_id`), every keyword a flag asks for must be one the
    env takes, and, with a held-out evaluation (``--eval-n`` > 0), the env must have a test split that is not
    its training problems (:func:`~agents.env_ids.split_dataset`). Exits through ``parser.error`` (status 2).
    """
    try:
        args.env_kwargs = parse_env_kwargs(args.env_kwargs) if not isinstance(args.env_kwargs, dict) else args.env_kwargs
        spec = check_env_id(args.env)
        require_llm_env(entry_point_class(spec), args.env)
        if bare_id(args.env) in TEST_ONLY_ENV_IDS:
            raise EnvError("The GSM8K originals are test-only (training on them would evaluate on the training "
                           "set). Train on LLMMath-v0 and evaluate GSM8K with llm-gym eval (scripts/evaluate.py).")
        kwargs, given = env_keywords(args)
        fit_kwargs(spec, {**kwargs, **dict.fromkeys(set(given) - set(kwargs))}, given)
        if args.eval_n > 0 and "split" not in fit_kwargs(spec, {"split": "test"}, {}):
            raise EnvError(f"env {args.env!r} takes no split= keyword, so it has no held-out problems to evaluate: "
                           f"pass --eval-n 0.")
        if args.eval_n > 0:
            split_dataset(spec, kwargs, "test")
    except EnvError as exc:
        parser.error(f"--env {args.env}: {exc}" if not str(exc).startswith("--") else str(exc))


def check_config_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check the algorithm flags as the algorithm's constructor will (ranges, choices, combinations, preset).

    Exits through ``parser.error`` (status 2) with the config's message, its field names written as flags
    (``--learning-rate must be a finite number >= 0, got nan.``).
    """
    klass = ALGORITHMS[args.algo]
    try:
        config = AlgorithmConfig(**{name: getattr(args, name) for name in AlgorithmConfig.field_names()})
        klass._check_preset(klass.__new__(klass), config.validate())  # the preset's own rule (e.g. GSPO's)
    except (TypeError, ValueError) as exc:
        parser.error(as_flag_names(str(exc)))


def as_flag_names(message: str) -> str:
    """``message`` with every :class:`AlgorithmConfig` field name written as its flag.

    >>> as_flag_names("batch_size=9 must be in 1..n_prompts*group_size=8")
    '--batch-size=9 must be in 1..--n-prompts*--group-size=8'
    """
    for name in sorted(AlgorithmConfig.field_names(), key=len, reverse=True):
        message = re.sub(rf"(?<![\w-]){name}(?![\w-])", "--" + name.replace("_", "-"), message)
    return message


def explicit_flags(argv: list[str] | None, algo: str) -> dict[str, Any]:
    """The flags given on the command line, ``{dest: value}`` (the defaults left out)."""
    parser = build_parser(algo)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


