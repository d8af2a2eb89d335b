"""The nightly job: every check too long for CI, in one command and one results folder.

``nox -s nightly`` (or ``python -m nightly`` from the repository root) runs the stages of
:data:`STAGES` in order, each logged to ``OUT/stages/<stage>.log``, and writes
``OUT/summary.md``, whose top says what regressed since the results folder given as
``--previous``. Like perf/, this is a folder of the repository, not an installed package.
"""

from __future__ import annotations

from nightly._stages import STAGES, Options, StageResult
from nightly._summary import Regressions, regressions, render_summary

__all__ = ["STAGES", "Options", "Regressions", "StageResult", "regressions", "render_summary"]
