"""A local S3-compatible server on 127.0.0.1 for trying backends and the suite on a bucket.

It wraps moto's server mode (``moto[server]``, plus ``boto3`` and ``s3fs``: the ``s3``
extra). :func:`local_s3` starts a server on a free loopback port, creates a bucket and
exports the variables that point botocore (so s3fs, so fsspec's ``s3://`` URLs) at it, in
this process and in every child process started meanwhile; on exit it restores the
environment, wipes the server's state and stops it::

    with local_s3("my-bucket") as s3:
        dcp.save(state, storage_writer=FsspecWriter(s3.url("ckpt")))

The plugin exposes it as the session fixture ``dcp_local_s3``. From a shell::

    $ python -m spec_tests.s3server            # prints the variables to export; Ctrl-C stops it

Nothing but the loopback interface is ever bound, and the credentials are moto's dummies.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moto.server import ThreadedMotoServer

__all__ = ["DEFAULT_BUCKET", "LocalS3", "local_s3", "main"]

DEFAULT_BUCKET = "dcp-conformance"
HOST = "127.0.0.1"  # loopback only: the server must never be reachable from outside
REGION = "us-east-1"  # the one region where CreateBucket needs no LocationConstraint
_KEY = _SECRET = "testing"  # moto accepts any credentials; these are its documented dummies

# Variables that would override or spoil the exported ones (a service-specific endpoint, a
# stale session token, a profile or switch that ignores the endpoint): hidden meanwhile.
_MASKED = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


@dataclass(frozen=True, slots=True)
class LocalS3:
    """A running local server and its bucket."""

    endpoint_url: str  # http://127.0.0.1:PORT
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        """The variables that make botocore, boto3 and s3fs use this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": _KEY,
            "AWS_SECRET_ACCESS_KEY": _SECRET,
            "AWS_DEFAULT_REGION": REGION,
        }

    @property
    def storage_options(self) -> dict[str, object]:
        """s3fs keyword arguments reaching this server without the environment variables."""
        return {
            "endpoint_url": self.endpoint_url,
            "key": _KEY,
            "secret": _SECRET,
            "client_kwargs": {"region_name": REGION},
        }

    def url(self, *parts: str) -> str:
        """``s3://BUCKET/part/...``: a URL inside the bucket (the bucket itself without parts)."""
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts if p.strip("/"))])


@contextmanager
def local_s3(bucket: str = DEFAULT_BUCKET, *, port: int = 0) -> Iterator[LocalS3]:
    """Serve ``bucket`` on 127.0.0.1:``port`` (0: any free port), env exported, until exit."""
    server = _start(port)
    host, bound = server.get_host_and_port()
    s3 = LocalS3(f"http://{host}:{bound}", bucket)
    try:
        _create_bucket(s3)
        with _exported(s3.env):
            yield s3
    finally:
        _reset(s3.endpoint_url)
        server.stop()


def _start(port: int) -> ThreadedMotoServer:
    from moto.server import ThreadedMotoServer

    # werkzeug logs one line per request at INFO: thousands per suite run, all noise.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    return server


def _create_bucket(s3: LocalS3) -> None:
    import boto3

    # boto3 rather than s3fs: s3fs's mkdir sends a LocationConstraint that moto refuses
    # for us-east-1 (InvalidLocationConstraint).
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=_KEY,
        aws_secret_access_key=_SECRET,
        region_name=REGION,
    )
    client.create_bucket(Bucket=s3.bucket)


def _reset(endpoint_url: str) -> None:
    # moto keeps its buckets in process-global state that outlives the server thread; wipe
    # it so that the next server in this process starts empty.
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except OSError:
        pass  # a server that cannot answer any more has nothing left to wipe for us


@contextmanager
def _exported(env: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in (*env, *_MASKED)}
    for name in _MASKED:
        os.environ.pop(name, None)
    os.environ.update(env)
    _forget_s3_clients()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _forget_s3_clients()


def _forget_s3_clients() -> None:
    # fsspec caches one S3FileSystem per set of arguments, and its client keeps the endpoint
    # it was built with: a cached one would reach a stopped server (or a real AWS endpoint).
    s3fs = sys.modules.get("s3fs")
    if s3fs is not None:
        s3fs.S3FileSystem.clear_instance_cache()


def _exports(s3: LocalS3) -> str:
    lines = [f"export {name}={value}" for name, value in s3.env.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spec_tests.s3server``: serve until interrupted, printing what to export."""
    parser = argparse.ArgumentParser(
        prog="python -m spec_tests.s3server",
        description="Run a local S3-compatible server (moto) on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--bucket", default=DEFAULT_BUCKET, help="bucket to create (%(default)s)")
    args = parser.parse_args(argv)
    with local_s3(args.bucket, port=args.port) as s3:
        print(f"# local S3 server at {s3.endpoint_url}, bucket {s3.url()}", flush=True)
        print("# in the shell that runs the suite:", flush=True)
        print(_exports(s3), flush=True)
        print(f"# then: pytest --pyargs spec_tests --dcp-root={s3.url('suite')}", flush=True)
        previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as Ctrl-C does
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("# stopped", flush=True)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
