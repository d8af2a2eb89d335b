"""``python -m spec_tests matrix|selftest|probe``: the commands live in :mod:`spec_tests.cli`."""

import sys

from spec_tests.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
