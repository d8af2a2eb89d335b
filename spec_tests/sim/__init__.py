"""DCP simulated: the call sequence, checkpoint locations, sharding layouts, real ranks.

- :mod:`.driver`: DCP's storage call sequence, written once (the harness and perf drive it);
- :mod:`.harness`: the same sequence for N simulated ranks with every contract check on;
- :mod:`.locations`: local directories or fsspec URL prefixes, made and removed alike;
- :mod:`.shardings`: deterministic sharding layouts (rank boxes of one tensor);
- :mod:`.ranks`: real processes in one gloo group, each reporting its verdict;
- :mod:`.s3server`: a local S3-compatible server for trying backends on a bucket.
"""
