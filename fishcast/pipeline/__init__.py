"""The forecast pipeline, in the order of the data flow: plan and run a forecast
(:mod:`~fishcast.pipeline.forecast`), evaluate each cosmology once
(:mod:`~fishcast.pipeline.execute`) through the content-addressed cache
(:mod:`~fishcast.pipeline.cache`), and grids of survey designs
(:mod:`~fishcast.pipeline.batch`)."""
