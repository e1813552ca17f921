"""Where workers come from: local clusters, dask-jobqueue pools on Slurm, the
inside-allocation workers (each a ``WorkerSource``), and the scaler, regions,
accounting and walltime horizon that decide how many pools to ask for and where."""
