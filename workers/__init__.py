"""Placeholder until workers lands."""
