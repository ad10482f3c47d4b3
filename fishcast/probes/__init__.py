"""Probes: pure functions from a :class:`~fishcast.cosmology.CosmologyResult` and nuisance
parameters to a data vector (the mean of the observable, or the covariance of a zero-mean
field) and the Fisher metric that goes with it."""
