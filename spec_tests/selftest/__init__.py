"""The suite's self-test: deliberately broken backends the conformance suite must reject.

Modelled on array-api-tests' meta-tests. :data:`BROKEN` holds backends that each plant one
realistic bug in ``reference`` or ``dcp_impl-fs`` (modules :mod:`.writers`,
:mod:`.readers`, :mod:`.protocol`); :data:`FAITHFUL` holds the same bases passed through
the same wrapping machinery unchanged. ``python -m spec_tests selftest`` runs the suite on
each (:mod:`spec_tests.cli.selftest`) and exits 0 only if every broken backend is killed and every
faithful wrapper passes.
"""

from __future__ import annotations

from spec_tests.selftest.catalogue import BROKEN, FAITHFUL, spec_of

__all__ = ["BROKEN", "FAITHFUL", "spec_of"]
