"""File system primitives every phase shares: strict operations inside one root, mounts, locks, the machine."""
