"""Treatment episodes: one per patient condition, moving through the pathway's states in order."""
