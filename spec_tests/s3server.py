"""``python -m spec_tests.s3server``: the documented path of :mod:`spec_tests.sim.s3server`."""

import sys

from spec_tests.sim.s3server import DEFAULT_BUCKET, LocalS3, local_s3, main

__all__ = ["DEFAULT_BUCKET", "LocalS3", "local_s3", "main"]

if __name__ == "__main__":
    sys.exit(main())
