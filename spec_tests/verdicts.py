"""The harness's verdicts (the documented import path; they live in :mod:`spec_tests.contract`)."""

from spec_tests.contract.verdicts import ContractViolation, Refusal, chain, may_refuse, text_of

__all__ = ["ContractViolation", "Refusal", "chain", "may_refuse", "text_of"]
