"""The agent: a registry mirror on every host, fetching blobs peer-to-peer."""
