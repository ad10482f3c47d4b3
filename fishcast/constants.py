"""Physical constants shared by the probes (one definition each)."""

#: speed of light in vacuum [km/s] (exact, SI definition of the metre)
C_KMS = 299792.458
