"""runtime/metrics package."""
