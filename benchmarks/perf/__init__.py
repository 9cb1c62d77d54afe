"""Performance measurements reported as ratios within one run (never absolute times in tests)."""
