"""torch's own save planning, a torch-upgrade check.

Properties in spec_tests.properties.torch_planning.
"""

from spec_tests.properties.torch_planning import TorchPlanningProperties


class TestTorchPlanning(TorchPlanningProperties):
    """torch's DefaultSavePlanner global-plan validation; the same whatever --dcp-backend is."""
