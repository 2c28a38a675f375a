"""The account domain, shared by every front end: operations on accounts and keys
(``operations``), the checks of what operators send (``validation``), restoring an account Redis
lost (``restore``), API keys and their cache (``apikeys``, ``keycache``), the usage object
(``usage``), and the one way async code calls the synchronous store (``stored``).

It uses the credit engine and the store through ``gateway.services``; it never imports a
front end.
"""
