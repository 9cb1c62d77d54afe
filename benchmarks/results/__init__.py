"""Where results live: the SQLite store, merged per-job stores, and the file systems it may use."""
