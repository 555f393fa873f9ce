from django.http import HttpResponse


def index(request):
    return HttpResponse("Hello from Django on wsgipool!\n", content_type="text/plain")
