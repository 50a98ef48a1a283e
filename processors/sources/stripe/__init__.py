"""Stripe as a source: its events mapped onto billing event contract v1."""
