"""BitTorrent transport: the host's one libtorrent session and the verified files it seeds."""
