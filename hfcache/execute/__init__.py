"""Phase 3, execute: guards, live checks, removal, the prune lock and the audit log."""
