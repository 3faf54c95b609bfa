"""Eagle's benchmarks: a swarm of hosts in network namespaces on one machine.

``python -m bench.swarm`` (``make bench``) compares pulling an image straight from the
origin, with stock libtorrent, and through Eagle's agents, on the same shaped links
and from the same start; see ``bench/swarm.py`` and the README.
"""
