"""The whole conformance suite as one class a backend author subclasses.

```python
from spec_tests.kit import BackendTests

class TestMyStore(BackendTests):
    xfails = {
        "test_killed_save_keeps_previous": {
            "reason": "commit is not atomic yet",
            "issue": "mystore#12",
            "raises": "ContractViolation",
            "match": "mix of the two saves",
        },
        "test_overwrite_*": "overwrite leaves stale parts",  # a reason alone: any failure
    }

    @pytest.fixture(scope="class")
    def dcp_backend(self):
        return MyBackend()
```

Capability skips apply as in ``pytest --pyargs spec_tests``. ``xfails`` maps test-name
globs (fnmatch, matched against the test function's name with any ``[param]``) to an
entry with the keys of an ``[[xfail]]`` TOML entry (or to a reason alone), and the plugin
judges them with the same hook: a listed test that fails differently from its ``raises`` /
``match`` is a real failure, strict entries are strict only under a derandomized profile,
and an entry that matches no test is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from spec_tests.plugin.xfails import XfailEntry, kit_entries
from spec_tests.properties.adversity import AdversityProperties
from spec_tests.properties.asynchronous import AsyncProperties
from spec_tests.properties.configuration import ConfigurationProperties
from spec_tests.properties.consolidation import ConsolidationProperties
from spec_tests.properties.contract import ContractProperties
from spec_tests.properties.coverage import CoverageProperties
from spec_tests.properties.faults import FaultProperties
from spec_tests.properties.hostile import HostileProperties
from spec_tests.properties.hostile_files import HostileFilesProperties
from spec_tests.properties.huge import HugeProperties
from spec_tests.properties.loads import LoadProperties
from spec_tests.properties.metadata import MetadataProperties
from spec_tests.properties.multiprocess import MultiprocessProperties
from spec_tests.properties.production import ProductionSaveProperties
from spec_tests.properties.resharding import ReshardingProperties
from spec_tests.properties.roundtrip import RoundTripProperties
from spec_tests.properties.scale import ScaleProperties
from spec_tests.properties.unclaimed import UnclaimedProperties
from spec_tests.properties.workers import WorkerFailureProperties

__all__ = ["BackendTests"]


class BackendTests(
    RoundTripProperties,
    ReshardingProperties,
    MetadataProperties,
    CoverageProperties,
    ContractProperties,
    LoadProperties,
    ConfigurationProperties,
    FaultProperties,
    WorkerFailureProperties,
    HostileProperties,
    HostileFilesProperties,
    AdversityProperties,
    ScaleProperties,
    ConsolidationProperties,
    MultiprocessProperties,
    AsyncProperties,
    ProductionSaveProperties,
    UnclaimedProperties,
    HugeProperties,
):
    """Every conformance property; override the ``dcp_backend`` fixture to test your backend.

    torch's own save planning (``spec_tests.properties.torch_planning``) is not included: it
    does not depend on the backend.
    """

    #: Test-name globs (fnmatch, against the test function's name with any ``[param]``) ->
    #: a reason, or a table with a TOML entry's keys: ``reason`` and optional ``raises``,
    #: ``match``, ``strict``, ``issue``. Judged exactly as ``--dcp-xfails-file`` entries are.
    xfails: ClassVar[Mapping[str, str | Mapping[str, Any]]] = {}

    @classmethod
    def dcp_xfail_entries(cls) -> list[XfailEntry]:
        """This class's ``xfails`` as expected-failure entries (read by the plugin)."""
        return kit_entries(cls.xfails, source=f"{cls.__module__}.{cls.__qualname__}.xfails")
