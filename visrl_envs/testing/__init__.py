"""The env contract as a library: every check the registered ids pass, for any env you build.

Run a registered id, or any factory of a :class:`~visrl_envs.core.VisualEnv` (your own task, your
own pages or targets), through the whole conformance suite::

    from visrl_envs.testing import check_env_contract

    report = check_env_contract("visrl/Jigsaw-v1")  # raises ContractViolation on a failure
    report = check_env_contract(functools.partial(MyTaskEnv, level=2), interfaces=["text"])
    print(report)

In pytest, parametrize over the checks to get one test per check (what tests/test_conformance.py
does for the registry)::

    from visrl_envs.testing import CHECKS, EnvUnderTest, cases

    SUBJECT = EnvUnderTest.of(MyTaskEnv)

    @pytest.mark.parametrize(("check", "mode"), list(cases(SUBJECT)), ids=str)
    def test_contract(check, mode):
        check.run(SUBJECT, mode)

The checks need the ``dev`` extra's ``jsonschema`` and the ``sb3`` extra for SB3's checker (they
are skipped, and reported as skipped, without them).
"""

from visrl_envs.testing.contract import (
    CHECKS,
    Check,
    CheckResult,
    ContractError,
    ContractReport,
    ContractSkip,
    ContractViolation,
    EnvUnderTest,
    cases,
    check_env_contract,
    checks_named,
    digest,
    digest_of,
    run_trajectory,
    trajectory_digest,
)
from visrl_envs.testing.corpus import HostileText, malformed_numeric_actions, malformed_text_actions

__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "ContractError",
    "ContractReport",
    "ContractSkip",
    "ContractViolation",
    "EnvUnderTest",
    "HostileText",
    "cases",
    "check_env_contract",
    "checks_named",
    "digest",
    "digest_of",
    "malformed_numeric_actions",
    "malformed_text_actions",
    "run_trajectory",
    "trajectory_digest",
]
