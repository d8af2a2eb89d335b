"""The suite's verdicts: ContractViolation is never a refusal, lost thread errors fail."""

from __future__ import annotations

import threading

import pytest
from torch.distributed.checkpoint.api import CheckpointException

from spec_tests.contract.verdicts import ContractViolation, chain, may_refuse, text_of
from spec_tests.sim import harness


def test_may_refuse_records_a_backend_error() -> None:
    with may_refuse("anything") as outcome:
        raise OSError("disk full")
    assert outcome.refused
    assert isinstance(outcome.error, OSError)


def test_may_refuse_without_an_error_is_no_refusal() -> None:
    with may_refuse("anything") as outcome:
        pass
    assert not outcome.refused


def test_may_refuse_reraises_a_violation() -> None:
    with pytest.raises(ContractViolation, match="missing WriteResult"), may_refuse("saving"):
        raise ContractViolation("missing WriteResult")


def _wrap_a_violation() -> None:
    try:
        raise ContractViolation("target left unfilled")
    except ContractViolation as err:
        raise RuntimeError("backend: read failed") from err


def test_may_refuse_reraises_a_violation_a_backend_wrapped() -> None:
    with pytest.raises(RuntimeError, match="backend: read failed") as info, may_refuse("saving"):
        _wrap_a_violation()
    assert "not an allowed refusal" in "".join(info.value.__notes__)


def test_chain_reaches_checkpoint_exception_failures() -> None:
    inner = ContractViolation("rank 1 broke the contract")
    outer = CheckpointException("save failed", {1: (inner, [])})
    assert inner in list(chain(outer))
    assert "rank 1 broke the contract" in text_of(outer)


def test_chain_reaches_exception_group_members_and_notes() -> None:
    leaf = ValueError("leaf")
    leaf.add_note("a note")
    group = ExceptionGroup("two", [KeyError("k"), leaf])
    assert leaf in list(chain(group))
    assert "a note" in text_of(group)


def _die_in_a_thread() -> None:
    thread = threading.Thread(target=lambda: 1 / 0, name="worker-0")
    thread.start()
    thread.join()


def test_a_thread_error_lost_by_a_successful_call_is_a_violation() -> None:
    lost = "thread 'worker-0' raised ZeroDivisionError"
    with pytest.raises(ContractViolation, match=lost), harness.threads_surface_errors("save"):
        _die_in_a_thread()


def _die_in_a_thread_then_fail() -> None:
    _die_in_a_thread()
    raise OSError("the call failed anyway")


def test_a_thread_error_beside_a_failing_call_is_a_note() -> None:
    with pytest.raises(OSError, match="failed anyway") as info, harness.threads_surface_errors("x"):
        _die_in_a_thread_then_fail()
    assert "meanwhile a thread died" in "".join(info.value.__notes__)


def test_the_previous_excepthook_is_restored() -> None:
    before = threading.excepthook
    with harness.threads_surface_errors("save"):
        pass
    assert threading.excepthook is before


def test_an_injected_fault_is_found_only_by_its_own_token() -> None:
    fault, other = harness.Fault(lambda item: True), harness.Fault(lambda item: True)
    error = RuntimeError("backend failed")
    error.__cause__ = harness.InjectedFault("resolve_data fails", fault.token)
    assert fault.found_in(error)
    assert not other.found_in(error)
    assert fault.found_in(RuntimeError(f"text only: [{fault.token}]"))
