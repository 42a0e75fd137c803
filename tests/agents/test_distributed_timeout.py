"""Issue 27: a bounded collective timeout. A reward that hangs on one rank without ``reward_timeout`` used to hold
the whole job for the process group's 60-minute timeout; now the default is 5 minutes, set by
``LLM_GYM_DIST_TIMEOUT`` (seconds) or ``init_distributed(timeout_seconds=...)``, checked up front, and it reaches
the process group (read back from a real single-process gloo group)."""

from __future__ import annotations

import datetime
import math

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.common import distributed
from agents.common.distributed import (
    DEFAULT_TIMEOUT_SECONDS,
    TIMEOUT_ENV,
    WAIT_TIMEOUT_ENV,
    collective_timeout,
    init_distributed,
    wait_for_main_process,
)

# Environment texts that are not a number of seconds in (0, 30 days].
bad_env_texts = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "0", "-1", "1e9", "five", "5m", "60s", "1,5", "0x10", "True"]),
    st.floats(max_value=0.0).map(repr),
    st.floats(min_value=30 * 24 * 3600.0, exclude_min=True).map(repr),
    st.text(alphabet="abcxyz-_ ", min_size=1).filter(lambda t: t.strip()),
)


def test_default_is_five_minutes(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert DEFAULT_TIMEOUT_SECONDS == 300.0
    assert collective_timeout() == datetime.timedelta(minutes=5)
    monkeypatch.setenv(TIMEOUT_ENV, "  ")  # empty counts as unset
    assert collective_timeout() == datetime.timedelta(minutes=5)


def test_environment_and_argument(monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "600")
    assert collective_timeout() == datetime.timedelta(minutes=10)
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    assert collective_timeout() == datetime.timedelta(seconds=2.5)
    assert collective_timeout(42) == datetime.timedelta(seconds=42)  # the argument wins over the environment


@settings(max_examples=80, deadline=None)
@given(text=bad_env_texts)
def test_bad_environment_values_name_the_variable(text):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TIMEOUT_ENV, text)
        with pytest.raises(ValueError, match=rf"^{TIMEOUT_ENV}=.* is not a number of seconds in \(0, 2592000\]: set "
                                             rf"it to e\.g\. {TIMEOUT_ENV}=600"):
            collective_timeout()
        with pytest.raises(ValueError, match=TIMEOUT_ENV):
            init_distributed()  # checked even in a single process, before anything loads


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf), st.booleans(),
                       st.just("60"), st.floats(min_value=30 * 24 * 3600.0, exclude_min=True)))
def test_bad_arguments_name_the_argument(value):
    with pytest.raises(ValueError, match=r"^timeout_seconds must be a finite number of seconds in \(0, 2592000\]"):
        collective_timeout(value)


@pytest.mark.parametrize(("env", "argument", "expected"), [(None, None, 300.0), ("42", None, 42.0),
                                                           ("42", 7.5, 7.5)])
def test_the_timeout_reaches_the_process_group(monkeypatch, tmp_path, env, argument, expected):
    """A real gloo group on this machine: init_distributed hands the timeout to init_process_group (launched as
    if by torchrun; the group is made with one process so the test needs no second one)."""
    assert not dist.is_initialized()
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29999")):
        monkeypatch.setenv(name, value)
    if env is None:
        monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(TIMEOUT_ENV, env)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    real = dist.init_process_group
    seen = {}

    def one_process_group(backend, **kwargs):
        seen.update(kwargs, backend=backend)
        real(backend, init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1, **kwargs)

    monkeypatch.setattr(dist, "init_process_group", one_process_group)
    try:
        assert init_distributed(argument) is False  # a group of one process
        assert seen == {"backend": "gloo", "timeout": datetime.timedelta(seconds=expected)}
        group = dist.distributed_c10d._get_default_group()
        assert group._get_backend(torch.device("cpu")).options._timeout == datetime.timedelta(seconds=expected)
        wait_for_main_process()  # one process: nothing to wait for
    finally:
        dist.destroy_process_group()


def test_wait_for_main_process_checks_its_timeout_and_is_a_no_op_alone(monkeypatch):
    assert distributed.DEFAULT_WAIT_TIMEOUT_SECONDS == 3600.0
    monkeypatch.delenv(WAIT_TIMEOUT_ENV, raising=False)
    assert wait_for_main_process() is None
    monkeypatch.setenv(WAIT_TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=rf"{WAIT_TIMEOUT_ENV}='soon' is not a number of seconds"):
        wait_for_main_process()
