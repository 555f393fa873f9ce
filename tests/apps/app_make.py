"""Only a ``make_app()`` factory: ``wsgipool app_make`` must call it."""


def make_app():
    def wsgi(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "8")])
        return [b"make_app"]

    return wsgi
