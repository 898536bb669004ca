"""A minimal Flask app for the hubtwist recipe (docs/recipes.md), served by gunicorn."""

from flask import Flask, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

app = Flask(__name__)
# hubtwist strips its prefix and says what it was in X-Forwarded-Prefix; ProxyFix makes
# url_for() build public URLs from it (and from X-Forwarded-Proto/-Host: one proxy, hubtwist).
app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)


@app.route("/")
def page() -> str:
    return (f'<title>recipe-flask-ok</title>'
            f'<link rel="stylesheet" href="{url_for("static", filename="recipe.css")}">')
