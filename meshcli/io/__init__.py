"""Sources (what frames come from) and sinks (where results go)."""
