"""`playbook stress`: a bounded concurrency test of a pool configuration."""
