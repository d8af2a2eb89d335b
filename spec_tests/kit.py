"""The whole conformance suite as one class a backend author subclasses.

```python
from spec_tests.kit import BackendTests

class TestMyStore(BackendTests):
    xfails = {"test_killed_save_keeps_previous": "commit is not atomic yet"}

    @pytest.fixture(scope="class")
    def dcp_backend(self):
        return MyBackend()
```

Capability skips apply as in ``pytest --pyargs spec_tests``; ``xfails`` maps
test-name globs (fnmatch, matched against the test function's name with any
``[param]``) to reasons and marks those tests ``xfail(strict=True)``.
"""

from __future__ import annotations

import fnmatch
from typing import ClassVar

import pytest

from spec_tests.properties.configuration import ConfigurationProperties
from spec_tests.properties.consolidation import ConsolidationProperties
from spec_tests.properties.contract import ContractProperties
from spec_tests.properties.coverage import CoverageProperties
from spec_tests.properties.faults import FaultProperties
from spec_tests.properties.hostile import HostileProperties
from spec_tests.properties.huge import HugeProperties
from spec_tests.properties.metadata import MetadataProperties
from spec_tests.properties.multiprocess import MultiprocessProperties
from spec_tests.properties.resharding import ReshardingProperties
from spec_tests.properties.roundtrip import RoundTripProperties
from spec_tests.properties.unclaimed import UnclaimedProperties
from spec_tests.properties.workers import WorkerFailureProperties

__all__ = ["BackendTests"]


class BackendTests(
    RoundTripProperties,
    ReshardingProperties,
    MetadataProperties,
    CoverageProperties,
    ContractProperties,
    ConfigurationProperties,
    FaultProperties,
    WorkerFailureProperties,
    HostileProperties,
    ConsolidationProperties,
    MultiprocessProperties,
    UnclaimedProperties,
    HugeProperties,
):
    """Every conformance property; override the ``dcp_backend`` fixture to test your backend.

    torch's own save planning (``spec_tests.properties.torch_planning``) is not included: it
    does not depend on the backend.
    """

    xfails: ClassVar[dict[str, str]] = {}

    @pytest.fixture(autouse=True)
    def _dcp_kit_xfails(self, request: pytest.FixtureRequest) -> None:
        # Applied at setup, so pytest evaluates the mark when the test body runs.
        name = request.node.name
        for pattern, reason in self.xfails.items():
            if fnmatch.fnmatchcase(name, pattern):
                request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
                return
