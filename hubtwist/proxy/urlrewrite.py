"""
C{rewrite_urls}: root-absolute URLs in an app's HTML and CSS moved under its public prefix,
for apps that do not know they are served under one (they write C{href="/static/x.css"}
where the browser must ask for C{/user/ann/NAME/static/x.css}).

Pure and streaming: a L{UrlRewriter} takes the body chunk by chunk and gives back what can
be sent so far, keeping only a bounded carry-over (a tag cut by a chunk boundary, at most
L{MAX_TAG} bytes; a few bytes of a CSS token or an end marker). Whatever the chunking, the
output is the same as for the whole body in one piece (every decision depends on a bounded
window of bytes, and a chunk's end only defers a decision until that window is complete).

What is rewritten (when the URL starts with one C{/}):
  - HTML attributes C{href src action formaction poster data background manifest icon
    cite} (quoted either way or unquoted; C{<base href>} too, so relative URLs resolve
    under the prefix), C{srcset}/C{imagesrcset} candidates, C{style} attributes' CSS,
    C{<meta http-equiv=refresh content="0;url=/...">};
  - CSS (C{text/css} bodies, C{<style>} elements, C{style} attributes): C{url(/...)} in
    any quoting and C{@import "/..."}.

Left alone: protocol-relative (C{//host/x}) and C{/\\host} URLs, URLs already under the
prefix, relative and absolute (C{https://...}) URLs, C{<script>}, C{<textarea>} and
C{<title>} contents, comments, and everything in other content types: URLs that scripts
build or that JSON carries are not rewritten (an app that needs those must learn its
prefix: C{{prefix}} in its command, or C{X-Forwarded-Prefix}). Bytes are handled as bytes,
so any ASCII-compatible charset works (UTF-16 pages are not rewritten correctly).
"""

from __future__ import annotations

import re

MAX_TAG = 16 * 1024
"""A tag longer than this (from C{<} to C{>}) is passed on unrewritten: the carry-over
buffer never holds more than this for a tag cut by a chunk boundary."""

_URL_ATTRIBUTES = frozenset({b"href", b"src", b"action", b"formaction", b"poster", b"data",
                             b"background", b"manifest", b"icon", b"cite"})
_SRCSET_ATTRIBUTES = frozenset({b"srcset", b"imagesrcset"})
# Elements whose content is not markup: a "<a href=/x>" in a script is a JavaScript string.
_RAW_ELEMENTS = (b"script", b"textarea", b"title")

# A start or end tag. Quotes delimit a value only after "=" (as in browsers: title=it's is
# one value); an "=" followed by a quote that does not close before the window's end makes
# the match fail, so a tag cut inside a quoted value is never taken for a shorter tag.
# Possessive quantifiers: a failing match (a tag cut by a chunk's end) must not backtrack
# exponentially through the nested repetitions.
_TAG = re.compile(
    rb"<(/?)([A-Za-z][^\s/>]*+)((?:[^>=]++|=(?:\s*+\"[^\"]*+\"|\s*+'[^']*+'|(?!\s*[\"'])))*+)>")
# The fast path: text and tags that cannot change, in one C-level match instead of a
# Python step per tag. A tag qualifies when nothing in it could be rewritten (no "=" before
# a "/", no "(", ",", "@", and no "=" inside a quoted value), it holds no "<" (so taking it
# whole or, were it too long for MAX_TAG, as text gives the same bytes) and it is not a
# raw element's start. Its structure is _TAG's, so it ends where _TAG would end it.
_PLAIN = re.compile(
    rb"(?:[^<]++|<(?!/?(?i:script|style|textarea|title)[\s/>])/?[A-Za-z][^\s/><]*+"
    rb"(?:[^>=<(,@]++|=(?!\s*+[\"']?\s*+/)(?:\s*+\"[^\"<(,@=]*+\"|\s*+'[^'<(,@=]*+'"
    rb"|(?!\s*[\"'])))*+>)*+")
_ATTRIBUTE = re.compile(
    rb"([^\s\"'>/=][^\s>/=]*)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]*))?")
# A cheap superset test: could this tag hold anything to rewrite?
_CANDIDATE = re.compile(rb"=\s*[\"']?\s*/|url\(|@import", re.IGNORECASE)
_REFRESH = re.compile(rb"(\s*[\d.]*\s*[;,]\s*url\s*=\s*[\"']?\s*)(/.*)", re.IGNORECASE | re.DOTALL)
_SRCSET_URL = re.compile(rb"(^|,)(\s*)(?=/)")
_DECLARATION_END = re.compile(rb">")
_RAW_END = {name: re.compile(rb"</" + name + rb"(?=[\s/>])", re.IGNORECASE)
            for name in (*_RAW_ELEMENTS, b"style")}


def needs_prefix(url: bytes, prefix: bytes) -> bool:
    """
    Whether C{url} (an attribute value or CSS URL, from its first byte; it may be cut
    after C{len(prefix)} bytes) is root-absolute and not yet under C{prefix} (with its
    trailing slash). Protocol-relative C{//host} and C{/\\host} (which browsers read the
    same way) are not root-absolute.
    """
    if not url.startswith(b"/") or url[1:2] in (b"/", b"\\"):
        return False
    bare = prefix[:-1]
    if url.startswith(prefix) or url == bare:
        return False
    return not (url.startswith(bare) and url[len(bare):len(bare) + 1] in (b"?", b"#"))


def _css_pattern(prefix: bytes) -> re.Pattern:
    # The URL part is cut after len(prefix) bytes: all needs_prefix looks at, which bounds
    # how far a match can reach (L{UrlRewriter} keeps that much back between chunks). It
    # stops at "<" so that, in a <style> element, no match reaches past "</style".
    return re.compile(
        rb"(?:url\(\s{0,32}(?:[\"']|&quot;|&#39;|&apos;)?|@import\s{0,32}[\"'])"
        rb"(/[^\"')\s<&]{0,%d})" % len(prefix), re.IGNORECASE)


class UrlRewriter:
    """
    Rewrites one response body (C{kind} C{"html"} or C{"css"}) into C{prefix} (bytes,
    with its trailing slash): L{feed} each chunk, then L{close}; each returns the bytes
    that are ready.
    """

    __slots__ = ("prefix", "_css", "_css_reach", "_state", "_carry", "_raw_end")

    def __init__(self, prefix: bytes, kind: str = "html") -> None:
        if kind not in ("html", "css"):
            raise ValueError(f"kind must be 'html' or 'css', not {kind!r}")
        self.prefix = prefix
        self._css = _css_pattern(prefix)
        # The longest a CSS match can be: what is kept back at a chunk's end.
        self._css_reach = 6 + 32 + 6 + 1 + len(prefix) + 1
        self._state = "text" if kind == "html" else "css"
        self._carry = b""
        self._raw_end: re.Pattern | None = None

    def feed(self, data: bytes) -> bytes:
        """The rewritten bytes that C{data} (the next chunk) makes ready."""
        return self._run(self._carry + data if self._carry else data, False)

    def close(self) -> bytes:
        """The rest, at the body's end."""
        return self._run(self._carry, True)

    # -- the states ------------------------------------------------------------------------

    def _run(self, buf: bytes, final: bool) -> bytes:
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while pos < end:
            state = self._state
            if state == "text":
                at = _PLAIN.match(buf, pos).end()
                if at > pos:
                    out.append(buf[pos:at])
                if at == end:
                    pos = end
                    break
                pos = self._markup(buf, at, final, out)  # buf[at] is "<"
                if pos < 0:  # a cut tag: wait for more
                    pos = at
                    break
            elif state == "comment":
                close = buf.find(b"-->", pos)
                if close < 0:
                    keep = end if final else max(pos, end - 2)
                    out.append(buf[pos:keep])
                    pos = keep
                    break
                out.append(buf[pos:close + 3])
                pos = close + 3
                self._state = "text"
            elif state == "raw" or state == "style":
                marker = self._raw_end.search(buf, pos)
                if marker is not None:
                    stop = marker.start()
                elif final:
                    stop = end
                else:  # keep what may be the start of the end tag
                    stop = max(pos, end - (12 if state == "raw" else max(12, self._css_reach)))
                if state == "style":
                    stop = self._rewrite_css(buf, pos, stop, out)
                else:
                    out.append(buf[pos:stop])
                pos = stop
                if marker is None:
                    break
                self._state = "text"
            else:  # css
                stop = end if final else max(pos, end - self._css_reach)
                pos = self._rewrite_css(buf, pos, stop, out)
                break
        self._carry = buf[pos:]
        return b"".join(out)

    def _markup(self, buf: bytes, at: int, final: bool, out: list[bytes]) -> int:
        """At a C{<}: write what it starts and return where to go on, or -1 to wait."""
        end = len(buf)
        following = buf[at + 1:at + 4]
        if not final and len(following) < 3 and (b"!--".startswith(following)
                                                  or not following):
            return -1  # "<", "<!" or "<!-": which one it is comes with the next chunk
        lead = following[:1]
        if following == b"!--":
            self._state = "comment"
            out.append(b"<!--")
            return at + 4
        if lead in (b"!", b"?"):  # a doctype or processing instruction: passed on
            close = _DECLARATION_END.search(buf, at, min(end, at + MAX_TAG))
            if close is None:
                if not final and end - at < MAX_TAG:
                    return -1
                out.append(b"<")
                return at + 1
            out.append(buf[at:close.end()])
            return close.end()
        if not (lead.isalpha() or lead == b"/"):
            out.append(b"<")  # "a < b": text
            return at + 1
        tag = _TAG.match(buf, at, min(end, at + MAX_TAG))
        if tag is None:
            if not final and end - at < MAX_TAG:
                return -1
            out.append(b"<")  # not a tag, or one too long to rewrite
            return at + 1
        if _CANDIDATE.search(buf, tag.start(3), tag.end(3)):
            out.append(self._rewrite_tag(tag))
        else:
            out.append(tag.group())
        if not tag.group(1):
            name = tag.group(2).lower()
            if name in _RAW_ELEMENTS or name == b"style":
                self._state = "style" if name == b"style" else "raw"
                self._raw_end = _RAW_END[name]
        return tag.end()

    # -- rewriting -------------------------------------------------------------------------

    def _rewrite_tag(self, tag: re.Match) -> bytes:
        body = tag.group(3)
        parts: list[bytes] = []
        last = 0
        for attribute in _ATTRIBUTE.finditer(body):
            value = attribute.group(2)
            if not value:
                continue
            name = attribute.group(1).lower()
            quote = value[:1] if value[:1] in (b'"', b"'") else b""
            inner = value[1:-1] if quote else value
            if name in _URL_ATTRIBUTES:
                stripped = inner.lstrip()
                if not needs_prefix(stripped, self.prefix):
                    continue
                new = inner[:len(inner) - len(stripped)] + self.prefix + stripped[1:]
            elif name in _SRCSET_ATTRIBUTES:
                new = _SRCSET_URL.sub(self._srcset_candidate(inner), inner)
            elif name == b"style":
                new = self.rewrite_css(inner)
            elif name == b"content":
                refresh = _REFRESH.fullmatch(inner)
                if refresh is None or not needs_prefix(refresh.group(2), self.prefix):
                    continue
                new = refresh.group(1) + self.prefix + refresh.group(2)[1:]
            else:
                continue
            if new == inner:
                continue
            start, stop = attribute.span(2)
            parts += (body[last:start], quote, new, quote)
            last = stop
        if not parts:
            return tag.group()
        whole = tag.group()
        head = tag.start(3) - tag.start()
        return whole[:head] + b"".join(parts) + body[last:] + b">"

    def _srcset_candidate(self, value: bytes):
        prefix = self.prefix

        def one(match: re.Match) -> bytes:
            url = value[match.end():match.end() + len(prefix) + 1]
            if needs_prefix(url, prefix):
                return match.group() + prefix[:-1]  # the candidate's own "/" follows
            return match.group()

        return one

    def rewrite_css(self, text: bytes) -> bytes:
        """C{text}, CSS complete in itself (a C{style} attribute), rewritten."""
        out: list[bytes] = []
        self._rewrite_css(text, 0, len(text), out)
        return b"".join(out)

    def _rewrite_css(self, buf: bytes, pos: int, stop: int, out: list[bytes]) -> int:
        """Write C{buf[pos:stop]} with the URLs of CSS matches starting before C{stop}
        rewritten, and return where the next call must start: C{stop}, or the end of a
        match that began before it (a match may reach past C{stop}, never past the
        buffer: L{_run} keeps back at least the longest a match can be)."""
        prefix = self.prefix
        last = pos
        for match in self._css.finditer(buf, pos):
            if match.start() >= stop:
                break
            stop = max(stop, match.end())
            if needs_prefix(match.group(1), prefix):
                at = match.start(1)
                out += (buf[last:at], prefix)
                last = at + 1
        out.append(buf[last:stop])
        return stop


def body_kind(content_type: bytes | None) -> str | None:
    """C{"html"} or C{"css"} for the response C{Content-Type}s that are rewritten, else
    C{None} (left untouched)."""
    if not content_type:
        return None
    media = content_type.split(b";", 1)[0].strip().lower()
    if media in (b"text/html", b"application/xhtml+xml"):
        return "html"
    if media == b"text/css":
        return "css"
    return None


def rewrite_whole(body: bytes, prefix: bytes, kind: str = "html") -> bytes:
    """C{body} rewritten in one piece (what the streaming rewriter's output adds up to)."""
    rewriter = UrlRewriter(prefix, kind)
    return rewriter.feed(body) + rewriter.close()
