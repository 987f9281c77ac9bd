"""Cloud-side model registry: versions on disk, an HTTP file server for the edges, staged rollout."""
