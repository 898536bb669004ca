"""
Cost of `rewrite_urls` per MiB of HTML: the pure rewriter (hubtwist.proxy.urlrewrite) on a
realistic page (links, images, a stylesheet, a script, text) fed in 16 KiB chunks, the size
the proxy gets them from the app. CPU time, best of 5.

    PYTHONPATH=. python3 bench/urlrewrite.py
"""

from __future__ import annotations

import time

from hubtwist.proxy.urlrewrite import UrlRewriter

MiB = 1 << 20
CHUNK = 16 * 1024

_BLOCK = (
    b'<div class="card"><a href="/docs/page-%d.html" class="link">Page %d</a>\n'
    b'<img src="/static/img/%d.png" srcset="/static/img/%d.png 1x, /static/img/%d@2x.png 2x" alt="">\n'
    b"<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    b"incididunt ut labore et dolore magna aliqua. <em>Ut enim</em> ad minim veniam.</p>\n"
    b'<form action="/search" method="get"><input name="q" type="text"></form></div>\n'
)


# A more ordinary page: mostly markup without root-absolute URLs (class attributes,
# relative and absolute links, text), one root-absolute link per block of ~1 KB.
_PLAIN_BLOCK = (
    b'<div class="row"><div class="col-md-6 item"><span class="badge">%d</span>\n'
    b'<h3 id="item-%d">Item title</h3><p class="lead">Sed ut perspiciatis unde omnis iste '
    b"natus error sit voluptatem accusantium doloremque laudantium, totam rem aperiam, eaque "
    b'ipsa quae ab illo inventore veritatis et quasi architecto beatae vitae.</p>\n'
    b'<ul class="list"><li><a href="details/%d.html">details</a></li><li><a '
    b'href="https://example.org/x">elsewhere</a></li><li><a href="/items/%d">item</a></li>'
    b"</ul>\n<table class=table><tr><td>a</td><td>b</td><td>c</td></tr><tr><td>d</td>"
    b"<td>e</td><td>f</td></tr></table></div></div>\n"
)


def page(size: int, block: bytes = _BLOCK) -> bytes:
    head = (b'<!doctype html><html><head><link rel="stylesheet" href="/static/app.css">'
            b"<style>body{background:url(/static/bg.png)}</style>"
            b'<script src="/static/app.js"></script><script>var x = "/api/y";</script>'
            b"</head><body>\n")
    blocks, index = [head], 0
    total = len(head)
    while total < size:
        blocks.append(filled := block % ((index,) * block.count(b"%d")))
        total += len(filled)
        index += 1
    return b"".join(blocks)[:size]


def run(body: bytes, kind: str) -> float:
    best = float("inf")
    for _ in range(5):
        rewriter = UrlRewriter(b"/user/someone/app/", kind)
        start = time.process_time()
        for at in range(0, len(body), CHUNK):
            rewriter.feed(body[at:at + CHUNK])
        rewriter.close()
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    html = page(8 * MiB)
    seconds = run(html, "html")
    links = html.count(b'="/')
    print(f"HTML: {seconds / 8 * 1000:.1f} ms CPU per MiB ({8 / seconds:.0f} MiB/s), "
          f"{links / 8:.0f} root-absolute URLs per MiB")
    ordinary = page(8 * MiB, _PLAIN_BLOCK)
    seconds = run(ordinary, "html")
    links = ordinary.count(b'="/')
    print(f"ordinary HTML: {seconds / 8 * 1000:.1f} ms CPU per MiB ({8 / seconds:.0f} MiB/s), "
          f"{links / 8:.0f} root-absolute URLs per MiB")
    text = page(8 * MiB).replace(b"<", b"(")  # the same bytes with no markup: the floor
    seconds = run(text, "html")
    print(f"text without tags: {seconds / 8 * 1000:.2f} ms CPU per MiB")
    css = (b".a%d{background:url(/static/i.png)} .b{color:red;margin:0 auto}\n" * 200_000)[:8 * MiB]
    seconds = run(css, "css")
    print(f"CSS: {seconds / 8 * 1000:.1f} ms CPU per MiB")


if __name__ == "__main__":
    main()
