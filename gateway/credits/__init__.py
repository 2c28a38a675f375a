"""The credit engine: Redis only, and nothing of the store.

One ``.lua`` file per script (``common.lua`` their shared prelude), one typed method per script
in ``engine``, replies as the dataclasses of ``results``. Every Redis key is built in ``keys``;
``client`` connects (a URL, a Cluster, or the embedded fakeredis) and types the client at the
boundary; ``batching`` pipelines one loop turn's script calls, on ``wire``'s own connection for
a plain Redis.
"""
