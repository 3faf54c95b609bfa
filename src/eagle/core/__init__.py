"""Domain values shared by every component: digests, metainfo, errors. No I/O."""
