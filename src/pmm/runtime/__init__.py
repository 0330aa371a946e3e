"""Run plumbing: the run context and folder layout, trainers, the process pool, ranks, trackers."""
