"""The proxied routes, plain ASGI in front of Starlette: ``router`` picks the route, ``flow``
runs one request (authenticate, reserve, forward), ``relay`` streams the answer back, ``holds``
settles or refunds the reservation after the answer, ``answers`` builds the gateway's own
refusals and failures. Pure steps apart: ``headers``, ``bodies``, ``tokens``, ``idempotency``;
``upstream`` is the HTTP/1.1 client to the backends.
"""
