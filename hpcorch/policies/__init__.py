"""Policies: pure functions from state to decisions.

The live engine and the trace-driven simulator call the same code; only the
clock and the cluster differ. Inputs are the small frozen dataclasses of
:mod:`hpcorch.policies.state`; each policy module returns its own decisions,
each with a reason string for the journal.

- :mod:`~hpcorch.policies.retry`: what to do after a failed attempt.
"""
