"""Recipes and evaluation (application layer): recipe files, the runner, results, datasets, metrics, reports."""
