"""A small Pyramid app, served by wsgipool through Paste Deploy.

``development.ini`` next to this file names wsgipool as its server
(``[server:main] use = egg:wsgipool``), so from this folder::

    PYTHONPATH=. pserve development.ini      # http://127.0.0.1:6543/

``PYTHONPATH=.`` makes this module importable for ``use = call:hello_pyramid:main``; a real
project is an installed package and names itself with ``use = egg:myproject``.
"""

from pyramid.config import Configurator
from pyramid.response import Response


def hello(request):
    return Response("Hello from Pyramid on wsgipool!\n", content_type="text/plain")


def main(global_config, **settings):
    """The Paste Deploy app factory (``paste.app_factory`` signature)."""
    with Configurator(settings=settings) as config:
        config.add_route("hello", "/")
        config.add_view(hello, route_name="hello")
        return config.make_wsgi_app()
