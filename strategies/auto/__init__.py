"""`auto`: the compute-optimal allocator (difficulty model, allocator file) and the strategy that follows it."""
