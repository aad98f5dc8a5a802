"""The framework ceiling: Flask answering a small JSON object, no database.

The benchmark serves it under the service's own gunicorn.conf.py, so the
gap between this and the orders service is what the service adds.
"""

from flask import Flask


def create_app():
    """Build an app whose only route answers a fixed small JSON object."""
    app = Flask(__name__)

    @app.get("/")
    def status():
        return {"success": True, "data": {"status": "ok"}}

    return app
