"""Spec section 4: the call contract (properties in spec_tests.properties.contract)."""

from spec_tests.properties.contract import ContractProperties


class TestContract(ContractProperties):
    """Contract properties against the backend chosen with --dcp-backend."""
