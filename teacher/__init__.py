"""Teacher precompute stage: teacher exports and real teachers -> label store."""
