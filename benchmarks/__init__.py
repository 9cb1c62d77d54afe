"""The `bench` driver: suites, results store, leaderboard."""
