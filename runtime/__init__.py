"""Refocus Edge runtime: load a refocuser, sample focal stacks, write results.

Importing this package does no work; heavy modules are imported where used.
"""
