"""The tracker: a BEP 3 HTTP tracker with BEP 23 compact peers, BEP 48 scrape, and
"peer optimal arithmetic" (a handout policy that prefers local, complete, idle peers).

``announce`` is the pure protocol logic (parsing and encoding), ``handout`` the
policies, ``peerstore`` the swarm state behind an interface (``memstore``,
``redisstore``), ``locations`` the labels of a peer, ``http`` a small HTTP/1.1
server, and ``server`` the tracker that joins them.
"""

from __future__ import annotations
