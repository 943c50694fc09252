"""Preference optimisation (the align stage): losses, preference data, on-policy pairs; framework-free."""
