"""Only ``application``: ``wsgipool app_application`` must find it."""


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
    return [b"application"]
