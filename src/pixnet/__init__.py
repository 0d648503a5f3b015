"""pixnet."""
