"""Test kits for people who extend dcp_impl (they need pytest, which the ``test`` extra installs).

:class:`StoreTests` checks a :class:`dcp_impl.store.Store` implementation against the
contract the backends rely on; subclass it in your own test file::

    from dcp_impl.testing import StoreTests

    class TestMyStore(StoreTests):
        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(...)            # a fresh, empty location per test

        def put(self, store, name, data):  # bypass the store: write a file as your
            ...                            # storage's own client would

        def get(self, store, name):        # bypass the store: read a file back
            ...

:class:`CountingStore` wraps a store and records every data byte range a load reads (from
every process of a multi-process load, into one log file), to prove what it takes from storage.

:func:`tuned` is for tests of dcp_impl's read engine (and of stores that want its other
paths exercised): within ``with tuned(min_run=1, stage_all=True): ...`` reads use the given
:class:`Tuning` fields (I/O thresholds, staging every target, a fake device copier) instead
of the defaults; nothing else changes them.

:func:`abandoned_segments` names the shared-read segments (``share_reads="shm"``) under a
folder whose joined ranks have all exited: what a load left behind, told apart from the
segments of loads still running beside it.
"""

from dcp_impl._tuning import Tuning, tuned
from dcp_impl.store._stale import abandoned_segments
from dcp_impl.testing._counting import CountingStore, ReadRecord
from dcp_impl.testing._store import StoreTests

__all__ = ["StoreTests", "CountingStore", "ReadRecord", "Tuning", "abandoned_segments", "tuned"]
