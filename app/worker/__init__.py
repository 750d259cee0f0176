"""The editor worker: the job loop, what each job does, the quality gate and per-request strength."""
