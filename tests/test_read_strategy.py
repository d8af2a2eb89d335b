"""dcp_impl.transfer.strategy.choose: each of the five read strategies is chosen on its own,
and the costly facts are asked only when the choice depends on them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcp_impl.transfer.strategy import Strategy, choose

MIN_RUN = 4096


@dataclass
class FakeProbe:
    """Answers from fixed facts and records which were asked, in order."""

    device: bool = False
    mapping: bool = False
    run: int = 0
    asked: list[str] = field(default_factory=list)

    def device_readable(self) -> bool:
        self.asked.append("device")
        return self.device

    def mapped(self) -> bool:
        self.asked.append("mapped")
        return self.mapping

    def run_length(self) -> int:
        self.asked.append("runs")
        return self.run


def test_span_one_exact_span_into_a_direct_destination_asks_nothing() -> None:
    probe = FakeProbe(device=True, mapping=True, run=MIN_RUN)
    assert choose(direct=True, exact=True, min_run=MIN_RUN, probe=probe) is Strategy.SPAN
    assert probe.asked == []


def test_device_an_exact_span_the_source_fills_in_device_memory() -> None:
    probe = FakeProbe(device=True, mapping=True)
    assert choose(direct=False, exact=True, min_run=MIN_RUN, probe=probe) is Strategy.DEVICE
    assert probe.asked == ["device"]


@pytest.mark.parametrize("direct", [True, False])
def test_mapped_several_runs_or_a_converting_copy_come_from_the_mapping(direct: bool) -> None:
    probe = FakeProbe(mapping=True, run=MIN_RUN)
    assert choose(direct=direct, exact=False, min_run=MIN_RUN, probe=probe) is Strategy.MAPPED
    assert probe.asked == ["mapped"]  # not exact: the device is never asked


def test_runs_long_runs_into_a_direct_destination_of_an_unmapped_file() -> None:
    probe = FakeProbe(run=MIN_RUN)
    assert choose(direct=True, exact=False, min_run=MIN_RUN, probe=probe) is Strategy.RUNS
    assert probe.asked == ["mapped", "runs"]


def test_staged_short_runs_are_staged() -> None:
    probe = FakeProbe(run=MIN_RUN - 1)
    assert choose(direct=True, exact=False, min_run=MIN_RUN, probe=probe) is Strategy.STAGED
    assert probe.asked == ["mapped", "runs"]


def test_staged_an_indirect_destination_of_an_unmapped_file_never_plans_runs() -> None:
    probe = FakeProbe(run=MIN_RUN)
    assert choose(direct=False, exact=True, min_run=MIN_RUN, probe=probe) is Strategy.STAGED
    assert probe.asked == ["device", "mapped"]


@given(
    direct=st.booleans(),
    exact=st.booleans(),
    device=st.booleans(),
    mapping=st.booleans(),
    run=st.integers(0, 2 * MIN_RUN),
)
def test_the_choice_follows_the_preference_order(
    direct: bool, exact: bool, device: bool, mapping: bool, run: int
) -> None:
    probe = FakeProbe(device=device, mapping=mapping, run=run)
    got = choose(direct=direct, exact=exact, min_run=MIN_RUN, probe=probe)
    if direct and exact:
        expected = Strategy.SPAN
    elif exact and device:
        expected = Strategy.DEVICE
    elif mapping:
        expected = Strategy.MAPPED
    elif direct and run >= MIN_RUN:
        expected = Strategy.RUNS
    else:
        expected = Strategy.STAGED
    assert got is expected, (direct, exact, device, mapping, run)
    assert len(probe.asked) == len(set(probe.asked))  # each fact asked at most once
