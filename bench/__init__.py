"""Benchmarks: ``make bench`` runs them all and updates docs/benchmarks.md."""
