"""fla.utils.env: on / off switches from the environment."""

from __future__ import annotations

import pytest

from fla.utils.env import env_switch


def test_env_switch_reads_0_1_and_names_a_bad_value(monkeypatch):
    monkeypatch.delenv("FLA_TEST_SWITCH", raising=False)
    assert env_switch("FLA_TEST_SWITCH", default=True) and not env_switch("FLA_TEST_SWITCH", default=False)
    monkeypatch.setenv("FLA_TEST_SWITCH", "0")
    assert not env_switch("FLA_TEST_SWITCH", default=True)
    monkeypatch.setenv("FLA_TEST_SWITCH", "1")
    assert env_switch("FLA_TEST_SWITCH", default=False)
    monkeypatch.setenv("FLA_TEST_SWITCH", "on")
    with pytest.raises(ValueError, match="FLA_TEST_SWITCH='on': expected 0 or 1"):
        env_switch("FLA_TEST_SWITCH", default=False)
