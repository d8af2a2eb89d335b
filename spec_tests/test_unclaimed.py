"""Spec section 7: unclaimed capabilities refuse loudly (spec_tests.properties.unclaimed)."""

from spec_tests.properties.unclaimed import UnclaimedProperties


class TestUnclaimed(UnclaimedProperties):
    """Loud-refusal properties against the backend chosen with --dcp-backend."""
