"""Both factories: ``create_app()`` is looked for before ``make_app()``."""


def _text_app(body):
    def wsgi(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return wsgi


def create_app():
    return _text_app(b"create_app")


def make_app():
    return _text_app(b"make_app")
