"""The forecast pipeline, in the order of the data flow: plan the cosmology evaluations
(:mod:`~fishcast.pipeline.plan`), evaluate each cosmology once
(:mod:`~fishcast.pipeline.execute`) through the content-addressed cache
(:mod:`~fishcast.pipeline.cache`), then signals, derivatives, Fisher and diagnostics
(:mod:`~fishcast.pipeline.forecast`); grids of survey designs
(:mod:`~fishcast.pipeline.batch`)."""
