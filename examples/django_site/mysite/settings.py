"""Settings of the smallest Django site: one view, no database, no installed apps.

Serve it from ``examples/django_site``::

    wsgipool mysite.wsgi                     # http://127.0.0.1:8000/
    wsgipool mysite.wsgi --threads 32 --access-log -
"""

import os

# Development only: a real site reads its key from the environment or a secrets store.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-example-key-do-not-deploy")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
TIME_ZONE = "UTC"
