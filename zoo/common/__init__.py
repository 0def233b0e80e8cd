"""Helpers every layer shares: did-you-mean for unknown names, crash-safe file writes."""
