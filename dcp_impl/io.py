"""Deprecated alias of :mod:`dcp_impl.transfer` (renamed: ``io`` shadowed the standard
library's module of that name). Importing it warns; it will be removed in the next release.
"""

import warnings

from dcp_impl.transfer import *  # noqa: F403 (the alias re-exports the new module's names)
from dcp_impl.transfer import __all__ as __all__

warnings.warn(
    "dcp_impl.io is deprecated: import dcp_impl.transfer instead",
    DeprecationWarning,
    stacklevel=2,
)
