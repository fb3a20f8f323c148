"""Logging, metrics and health for both daemons."""
