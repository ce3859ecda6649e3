"""Phase 2, plan: settings and the policy file, pure policies, accounting, the plan and its file format."""
