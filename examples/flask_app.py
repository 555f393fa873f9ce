"""A small Flask app, served by wsgipool with no change to its code.

From this folder (``pip install wsgipool[flask]`` first)::

    flask --app flask_app serve                  # like flask run, on 127.0.0.1:5000
    flask --app flask_app --debug serve          # reloader and werkzeug's debugger on
    wsgipool flask_app:app --threads 32          # the plain wsgipool command

``/error`` raises, to show the debugger's traceback page in debug mode.
"""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask on wsgipool!\n"


@app.post("/echo")
def echo():
    return jsonify(received=request.get_data(as_text=True), length=request.content_length)


@app.get("/error")
def error():
    raise RuntimeError("this route fails on purpose")


if __name__ == "__main__":
    # `python flask_app.py`: werkzeug's run_simple, switched to wsgipool's by one import.
    from wsgipool import run_simple

    app.debug = True  # errors reach the debugger, as with app.run(debug=True)
    run_simple("127.0.0.1", 5000, app, use_reloader=True, use_debugger=True)
