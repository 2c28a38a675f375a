"""What the dashboard (``gateway.web``) and the operators' console (``gateway.admin``) share:
sessions, CSRF, the page renderer with its Content-Security-Policy, and the SVG charts."""
