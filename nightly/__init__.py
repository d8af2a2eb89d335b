"""The nightly job: every check too long for CI, in one command and one results folder.

``nox -s nightly`` (or ``python -m nightly`` from the repository root) runs the stages of
``nightly.stages.STAGES`` in order, each logged to ``OUT/stages/<stage>.log``, and writes
``OUT/summary.md``, whose top says what regressed since the results folder given as
``--previous``. ``python -m nightly.compat`` turns ``nox -s compat``'s runs (the matrix on
each torch release) into docs/compatibility.md. Like perf/, a folder of the repository, not
an installed package; nothing is imported here, so that ``nightly.compat`` needs no torch.
"""
