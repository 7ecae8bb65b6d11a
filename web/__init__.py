"""The built-in portal page, a static page over the HTTP API."""
