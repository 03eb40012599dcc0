"""Runnable examples for mioreactor; each one is exercised by tests/test_examples.py.

A package, so ``reactor serve examples.flask_app:app`` works from the repository root.
"""
