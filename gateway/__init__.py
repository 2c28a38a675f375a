"""creditgate's gateway: the credit engine, the account domain, the HTTP front ends and the
entry points, in one-way layers (each imports only those below it; ``lint-imports`` checks):

    entry points    cli > server | demo > app         the only place things are wired together;
                    heads, beside app                 the server's bounds on request heads
    front ends      proxy | web | admin | sync        never import each other (sync is its own
                                                      top-level package)
    domain          accounts                          operations, validation, restore, key cache
    handles         services                          Redis client, credit engine, store engine
    engines         credits | store                   Redis only | SQL only, neither knows the other
    foundations     settings, errors, logs, metrics, signing, openapi

Backends import only ``gateway.signing`` (the verifier), which needs ``gateway.errors`` and
Starlette.
"""
