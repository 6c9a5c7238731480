"""Running the API: gunicorn, its request-reading worker, and the metrics it exposes."""
