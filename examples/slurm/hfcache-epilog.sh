#!/bin/bash
# Slurm epilog: after each job on a GPU node, bring the node's model cache back within its policy.
# Install: copy to /etc/slurm/epilog.d/hfcache.sh (mode 0755) with Epilog=/etc/slurm/epilog.d/*
# in slurm.conf; it runs as root on the node when a job ends.
#
# Slurm drains a node whose epilog exits non-zero. A cache that is busy (another job's prune,
# or this one running on a shared cache from another node: exit 75) is not the node's fault:
# that exits 0, logged. So does a prune in which some units failed (exit 1: the audit log has
# each error) or that was interrupted (130). Anything else (2: the policy file is wrong, 3 to 9:
# a safety check refused to go on, 70: a bug) exits with its code: the node drains and the
# reason is in the epilog's log, which is what an operator wants for a broken setup.
#
# A job still running on the node holds its models open: the prune sees that (it runs as
# root) and leaves them. --lock-wait is short: an epilog should not keep the node from the
# next job for long.
set -u
export HF_HOME="${HF_HOME:-/var/lib/models/huggingface}"
# The node's state database (the usage history, what hfcache sync keeps): exported, so that an
# operator's hfcache rm or apply on the node, run with the same variable, reads the same one.
export HFCACHE_STATE="${HFCACHE_STATE:-/var/lib/hfcache/state.db}"
HFCACHE="${HFCACHE:-/usr/local/bin/hfcache}"

"$HFCACHE" prune --yes --quiet --lock-wait=30s --config=/etc/hfcache/config.yaml \
  --log=/var/lib/hfcache/audit.log > /dev/null
status=$?
case "$status" in
  0) ;;
  1 | 75 | 130)
    logger -t hfcache-epilog "job ${SLURM_JOB_ID:-?}: hfcache prune exited $status; the node stays up" 2>/dev/null \
      || echo "hfcache-epilog: job ${SLURM_JOB_ID:-?}: hfcache prune exited $status; the node stays up" >&2
    status=0
    ;;
esac
exit "$status"
