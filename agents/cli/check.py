"""``llm-gym check ENV_ID [--model M]``: the conformance and learnability report of an env (docs/check.md).

Runs :func:`agents.check.run_checks` on one env, or on every env llm-gym knows (``--all``: its own and its
plugins'), prints one table per env (and a summary), writes the JSON (``--out``) and exits 0 (every conformance
check and probe passed), 1 (a conformance failure), 3 (a reward-hack probe failed) or 2 (bad flags or env id).

Examples::

    llm-gym check LLMMath-v0 --model default
    llm-gym check LLMTextArena-v0 --env-kwargs '{"game": "Wordle-v0"}' --out wordle.json
    llm-gym check my_package.envs:MyGame-v0 --grpo-iterations 0        # conformance and probes only
    llm-gym check --all --model default --out benchmarks/check/all_envs.json
"""

from __future__ import annotations

import argparse
import sys

from agents.check import EnvReport, print_reports, run_checks, write_json
from agents.cli.evaluate import number
from agents.env_ids import EnvError, known_env_ids, parse_env_kwargs

__all__ = ["NEEDS_ARGUMENTS", "build_parser", "main"]

#: Envs ``--all`` skips: they cannot be built without arguments of their own (check them one by one).
NEEDS_ARGUMENTS = {
    "LLMOpenEnv-v0": "needs base_url= (an OpenEnv server) or env= (an OpenEnv Environment class): "
                     "llm-gym check LLMOpenEnv-v0 --env-kwargs '{\"base_url\": \"http://127.0.0.1:8000\"}'",
}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The flags of ``llm-gym check`` (each number checked before anything loads)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env_id", nargs="?", default=None,
                   help="env id: llm-gym's, a plugin's (an llm_gym.envs entry point) or module:EnvId")
    p.add_argument("--all", action="store_true",
                   help="check every env llm-gym knows (its own and its plugins'); envs whose optional extra is "
                        "missing, or that need arguments (LLMOpenEnv-v0), are skipped")
    p.add_argument("--model", default=None,
                   help="HF folder, .gguf file, hub id or 'default' (unset = the default model, SmolLM2-135M-Instruct)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default: %(default)s)")
    p.add_argument("--env-kwargs", default=None,
                   help="more keywords of the env, a JSON object, e.g. '{\"game\": \"Wordle-v0\"}' (one env only)")
    p.add_argument("--problems", type=number(int, 1), default=2,
                   help="problems the determinism, token and probe checks play (default: %(default)s)")
    p.add_argument("--repeats", type=number(int, 2), default=3,
                   help="plays of each response in the determinism check (default: %(default)s)")
    p.add_argument("--grpo-iterations", type=number(int, 0), default=5,
                   help="GRPO rollouts of the learnability run; 0 = no run (default: %(default)s)")
    p.add_argument("--n-prompts", type=number(int, 1), default=4,
                   help="prompts per GRPO rollout (default: %(default)s)")
    p.add_argument("--group-size", type=number(int, 2), default=8,
                   help="responses per prompt, G (default: %(default)s)")
    p.add_argument("--learning-rate", type=number(float, 0, exclusive=True), default=2e-5,
                   help="GRPO's learning rate (default: %(default)s, llm-gym train's CPU profile)")
    p.add_argument("--seed", type=number(int, 0), default=0, help="seed of the sampled turns and GRPO (default: 0)")
    p.add_argument("--out", default=None, help="write the reports to this JSON file (docs/check.md lists its fields)")
    return p


def check_one(env_id: str, args: argparse.Namespace, env_kwargs: dict) -> EnvReport:
    """:func:`agents.check.run_checks` of ``env_id`` with the flags.

    Raises:
        EnvError: an unknown id, a keyword the env does not take, a missing optional extra.
    """
    return run_checks(env_id, model=args.model, device=args.device, env_kwargs=env_kwargs, problems=args.problems,
                      repeats=args.repeats, grpo_iterations=args.grpo_iterations, n_prompts=args.n_prompts,
                      group_size=args.group_size, learning_rate=args.learning_rate, seed=args.seed)


def check_all(args: argparse.Namespace) -> list[EnvReport]:
    """Every known env checked in turn; one that needs arguments or a missing extra is a skipped report."""
    reports = []
    for env_id in known_env_ids():
        if env_id in NEEDS_ARGUMENTS:
            reports.append(EnvReport(env_id, skipped=NEEDS_ARGUMENTS[env_id]))
            continue
        print(f"checking {env_id} ...", file=sys.stderr, flush=True)
        try:
            reports.append(check_one(env_id, args, {}))
        except EnvError as exc:
            reports.append(EnvReport(env_id, skipped=str(exc)))
    return reports


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Check, print the tables, write ``--out``; returns the exit code (docs/check.md).

    Args:
        argv: The flags (default: ``sys.argv[1:]``).
        prog: The command's name in usage lines (``"llm-gym check"``).
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.all == (args.env_id is not None):
        parser.error("give one ENV_ID or --all")
    if args.all and args.env_kwargs is not None:
        parser.error("--env-kwargs applies to one env: check that env alone")
    try:
        env_kwargs = parse_env_kwargs(args.env_kwargs)
        reports = check_all(args) if args.all else [check_one(args.env_id, args, env_kwargs)]
    except EnvError as exc:
        parser.error(str(exc))
    from rich.console import Console

    print_reports(reports, Console(width=None if sys.stdout.isatty() else 140))
    if args.out:
        print(f"wrote {write_json(reports, args.out, args.model)}")
    return max(r.exit_code for r in reports)


if __name__ == "__main__":
    sys.exit(main())
