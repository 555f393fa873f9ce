"""The site's WSGI application. From ``examples/django_site``::

    wsgipool mysite.wsgi          # the module's ``application``; or mysite.wsgi:application

Any Django project serves the same way: ``wsgipool PROJECT.wsgi`` from the folder that
holds ``manage.py``.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()
