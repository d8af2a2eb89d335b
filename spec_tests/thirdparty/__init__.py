"""Backends nobody in this project wrote, as the suite judges them: one module each.

Not built-ins: each needs its package installed (``constraints/thirdparty.txt``) and its
store reachable. The nightly (``nightly/stages.py``) runs each on the project's local S3
server and publishes its verdict beside the built-ins; each module's ``.toml`` lists its
expected failures, every one a finding of docs/known-bugs.md.
"""
