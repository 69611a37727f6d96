"""The env contract, checked on every registered id and each interface it declares (DESIGN.md
section 3): one test per (id, check, interface), every check from :mod:`visrl_envs.testing`, the
library users run their own envs through. A new id is tested the moment it is registered."""

from __future__ import annotations

import pytest

from visrl_envs.registry import REGISTRY
from visrl_envs.testing import ContractSkip, EnvUnderTest, cases

SUBJECTS = {e.id: EnvUnderTest.of(e.id) for e in REGISTRY}
CASES = [
    pytest.param(env_id, check, mode, id=f"{env_id}-{check.name}-{mode}")
    for env_id, subject in SUBJECTS.items()
    for check, mode in cases(subject)
]


@pytest.mark.parametrize(("env_id", "check", "mode"), CASES)
def test_contract(env_id: str, check, mode: str) -> None:  # type: ignore[no-untyped-def]
    try:
        check.run(SUBJECTS[env_id], mode)
    except ContractSkip as reason:
        pytest.skip(str(reason))


def test_every_id_declares_what_the_suite_honours() -> None:
    """An id with no numeric twin is not tested as one (and vice versa)."""
    for env_id, subject in SUBJECTS.items():
        modes = {mode for _, mode in cases(subject)}
        assert modes <= {*subject.interfaces, "both"}, (env_id, modes)
