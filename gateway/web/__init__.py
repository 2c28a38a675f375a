"""The web app's own routes: the account holder's usage (``user``), health, readiness and
metrics (``health``), the OpenAPI document (``openapi``), and the errors' Starlette handlers
(``errors``). The app (``gateway.app``) mounts these beside the proxy and the admin API.
"""
