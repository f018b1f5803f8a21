"""Energy: meters, the sampler thread, attribution to requests, carbon."""
