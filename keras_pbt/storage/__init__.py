"""Where a population's state lives: the store the members meet in, the
checkpoint format on disk, and TensorBoard summaries."""
