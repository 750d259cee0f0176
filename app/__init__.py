"""The editing service: FastAPI API, Redis queue, editor worker, versioned weight deltas."""
