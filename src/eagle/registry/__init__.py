"""The OCI distribution API: talking to origins, and serving it to clients."""
