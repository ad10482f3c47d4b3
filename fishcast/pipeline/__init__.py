"""The forecast pipeline, in the order of the data flow: plan the cosmology evaluations
(:mod:`~fishcast.pipeline.plan`), evaluate each cosmology once
(:mod:`~fishcast.pipeline.execute`) through the content-addressed cache
(:mod:`~fishcast.pipeline.cache`), then signals, derivatives, Fisher and diagnostics
(:mod:`~fishcast.pipeline.forecast`), with the Gaussian-validity check's own evaluations,
which feed a diagnostic only and never stop the run (:mod:`~fishcast.pipeline.validity`);
grids of survey designs
(:mod:`~fishcast.pipeline.batch`)."""
