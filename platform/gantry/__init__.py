"""Gantry: a self-hosted serverless platform for AI-agent workloads."""

__version__ = "0.1.0"
