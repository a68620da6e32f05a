"""The pytest plugin as a user's test suite meets it: inner pytest sessions (pytester) that load
it through its pytest11 entry point, as any suite in an environment with spusim installed does.
"""

from __future__ import annotations

import pytest

from spusim.hil.plugin import SpuDaemon

pytestmark = pytest.mark.daemon

USER_TESTS = """
import numpy as np
import pytest

ENDPOINTS = {}


@pytest.mark.spu_config(cells=8)
def test_configured(spu_daemon, spu_device):
    assert spu_device.config["cells"] == 8
    assert spu_device.status()["programmed"] is False
    spu_device.program(np.eye(3))  # left programmed: the next test's device is reset
    ENDPOINTS["cells8"] = spu_daemon.endpoint


@pytest.mark.spu_config(cells=8)
def test_same_configuration_same_daemon_and_a_reset_device(spu_daemon, spu_device):
    assert spu_daemon.endpoint == ENDPOINTS["cells8"]
    assert spu_device.status()["programmed"] is False


@pytest.mark.spu_config(cells=12)
def test_other_configuration_other_daemon(spu_daemon, spu_device):
    assert spu_daemon.endpoint != ENDPOINTS["cells8"]
    assert spu_device.config["cells"] == 12


@pytest.mark.spu_config(cells=8)
def test_fails_with_the_daemon_log(spu_device):
    spu_device.program(np.eye(2))
    assert False, "deliberate failure"
"""


def test_fixtures_marker_and_the_daemon_log_on_failure(pytester: pytest.Pytester) -> None:
    assert pytester.parseconfig().pluginmanager.get_plugin("spusim") is not None  # entry point
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("--spu-option", "log_level=debug", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: deliberate failure*",
                                 "*spu daemon log (tcp://127.0.0.1:*)*",
                                 "*op reset id *",  # the fixture's reset, then the test's op
                                 "*op program id * ms wall, +2 ns device time*"])


@pytest.mark.spu_config(cells=16, kappa0=0.01)  # a daemon other tests start anyway
def test_spu_connect_uses_a_running_daemon_and_skips_configured_tests(
        pytester: pytest.Pytester, spu_daemon: SpuDaemon) -> None:
    pytester.makepyfile(test_user="""
import pytest

def test_plain(spu_daemon, spu_device):
    assert spu_daemon.process is None
    assert spu_device.status()["boot_id"] == spu_device.boot_id

@pytest.mark.spu_config(test_mode=True)
def test_needs_its_own_daemon(spu_device):
    pass
""")
    result = pytester.runpytest("--spu-connect", spu_daemon.endpoint, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
