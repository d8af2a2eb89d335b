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
"""

from dcp_impl.testing._counting import CountingStore, ReadRecord
from dcp_impl.testing._store import StoreTests

__all__ = ["StoreTests", "CountingStore", "ReadRecord"]
