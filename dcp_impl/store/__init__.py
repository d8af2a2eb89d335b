"""Where a checkpoint's files live: a local directory or a prefix of an object store."""
