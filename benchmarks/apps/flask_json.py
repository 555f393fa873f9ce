"""Scenario 4: a Flask view returning ``jsonify(...)`` (framework overhead dominates)."""

from __future__ import annotations

from flask import Flask, Response, jsonify

app = Flask(__name__)


@app.get("/")
def index() -> Response:
    return jsonify(message="Hello, World!", framework="flask", items=[1, 2, 3])
