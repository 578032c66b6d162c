"""The edge fleet: a router in front of many nodes, node registration, remote stages on Ray Serve.

- ``config``: the router's ``fleet.yaml`` (regions, RTT matrix, IP prefixes, heartbeats).
- ``registry``: what the router knows about each node, from its heartbeats.
- ``routing``: the pure choice of candidate nodes for one session request.
- ``router``: the router's aiohttp application (``streamai router``).
- ``agent``: the node side: registration and heartbeats (``streamai serve --router``).
- ``remote``: stages placed ``remote``/``auto``, run by Ray Serve (a package, one module a concept; imports Ray lazily).
"""
