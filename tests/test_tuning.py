"""dcp_impl.testing.tuned: tests steer the read engine through one record, restored after."""

from __future__ import annotations

import pytest

from dcp_impl.testing import Tuning, tuned


def test_tuned_changes_only_the_given_fields_and_restores_them() -> None:
    default = Tuning()
    with tuned(min_run=1, stage_all=True) as inside:
        assert (inside.min_run, inside.stage_all) == (1, True)
        assert (inside.max_gap, inside.iov_max) == (default.max_gap, default.iov_max)
        with tuned(max_gap=11) as nested:
            assert (nested.min_run, nested.max_gap) == (1, 11)
    with pytest.raises(RuntimeError), tuned(min_run=2):
        raise RuntimeError
    with tuned() as after:
        assert after == default


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(TypeError), tuned(min_runs=1):
        pass
