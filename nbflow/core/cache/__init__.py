"""What makes a rerun instant: digests, code fingerprints, serialization, the stores and the planner."""
