"""Phase 1, scan: cache kinds behind one protocol (:mod:`.protocol`), their registry, and the scan over all roots."""
