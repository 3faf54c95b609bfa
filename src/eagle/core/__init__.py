"""Domain values shared by every component: digests, metainfo, peers, errors. No I/O."""
