"""The ceiling: the smallest WSGI app, served by the same start script as the real one."""

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
