"""Talk to Slurm: one client protocol, several backends (REST, CLI, pyslurm, fake)."""
