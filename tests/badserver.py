"""A loopback HTTP server that plays good and bad image hosts, for tests and the bench.

Start one with :func:`start` (or several on distinct loopback addresses with
:func:`start_many`); every route is built from the server's ``seed``, so runs
are repeatable. It only ever binds to 127.0.0.0/8.

Routes (``srv.url(path)`` gives the full link):

=============================  ===============================================================
``/img/<n>.jpg``, ``.png``     a good picture, distinct for every ``n`` (shapes on a background)
``/thumb/<n>.jpg``             a half-size copy of picture ``n`` (a search result's thumbnail)
``/dup/<name>.jpg``            the same bytes under any name (exact duplicates)
``/placeholder/<n>.jpg``       a "photo unavailable" picture, re-encoded at a different JPEG
                               quality and a slightly different size for every ``n``
``/gone/<n>.jpg``              redirects to ``/placeholder/0.jpg``, as hosts do with removed pictures
``/drawing/<n>.jpg``           a flat drawing: a disc on a plain background, colours and place
                               set by ``n`` (distinct pictures a perceptual hash calls the same)
``/copy/<kind>/<n>.jpg``       a copy of picture ``n``: ``crop``, ``border``, ``text``, ``smaller``,
                               ``reencode`` or ``mirror``
``/html-as-jpeg``              an HTML page sent as ``image/jpeg``
``/page.html``                 an HTML page sent as ``text/html``
``/status/<code>``             an empty answer with that HTTP status (404, 500, ...)
``/slow``                      a JPEG sent one byte a second
``/endless``                   an ``image/jpeg`` body that never ends (no Content-Length)
``/bomb.png``                  a real PNG of 20000 x 20000 pixels, a few tens of kB on disk
``/gzip-bomb``                 30 MB of zeros, gzip-encoded to about 30 kB
``/truncated.jpg``             the first half of a good JPEG
``/empty.jpg``                 a 200 answer with no body
``/loop``                      redirects to itself
``/chain/<k>``                 ``k`` redirects in a row, then picture 0
``/redirect-port/<port>``      redirects to picture 0 on 127.0.0.1:<port>
``/redirect-file``             redirects to ``file:///etc/passwd``
``/big-cl?size=N``             declares Content-Length N (default 25 MB) and sends it
``/big-nocl?size=N``           sends N bytes (default 25 MB) without Content-Length
=============================  ===============================================================

``latency`` (seconds) delays every answer, like a far-away host. ``srv.log``
records ``(path, Host header)`` of every request.
"""

from __future__ import annotations

import gzip
import io
import random
import struct
import threading
import time
import zlib
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit, urlunsplit

from PIL import Image, ImageDraw

HTML = b"<!DOCTYPE html><html><head><title>Cat pictures</title></head><body><p>Not a picture.</p></body></html>"
DEFAULT_BIG = 25_000_000

# --- pictures -------------------------------------------------------------------------


@lru_cache(maxsize=None)
def picture(n: int, seed: int = 0, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Picture ``n``: random rectangles and ellipses on a random background (distinct per n, seed)."""
    rng = random.Random(seed * 1_000_003 + n)
    w, h = size
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(w // 4, w), y0 + rng.randrange(h // 4, h)
        box = (x0 - w // 3, y0 - h // 3, x1 - w // 3, y1 - h // 3)
        fill = tuple(rng.randrange(256) for _ in range(3))
        (d.rectangle if rng.random() < 0.5 else d.ellipse)(box, fill=fill)
    return im


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **kw)
    return out.getvalue()


@lru_cache(maxsize=None)
def image_bytes(n: int, fmt: str = "JPEG", seed: int = 0) -> bytes:
    return encode(picture(n, seed), fmt, **({"quality": 90} if fmt == "JPEG" else {}))


@lru_cache(maxsize=None)
def thumb_bytes(n: int, seed: int = 0) -> bytes:
    im = picture(n, seed)
    return encode(im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR), "JPEG", quality=80)


@lru_cache(maxsize=1)
def _placeholder_master() -> Image.Image:
    """The 'photo unavailable' picture image hosts serve for removed photos."""
    im = Image.new("RGB", (640, 480), (226, 226, 226))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((220, 110, 420, 270), radius=18, outline=(150, 150, 150), width=10)
    d.polygon([(240, 250), (300, 170), (350, 230), (375, 200), (400, 250)], fill=(160, 160, 160))
    d.ellipse((360, 130, 395, 165), fill=(170, 170, 170))
    d.line((200, 290, 440, 90), fill=(190, 80, 80), width=12)
    d.text((320, 340), "photo unavailable", fill=(110, 110, 110), anchor="mm", font_size=40)
    return im


_PLACEHOLDER_VARIANTS = [((320, 240), 95), ((300, 225), 60), ((336, 252), 35), ((310, 232), 80),
                         ((288, 216), 50), ((352, 264), 70), ((320, 240), 20), ((296, 222), 90)]


@lru_cache(maxsize=None)
def placeholder_bytes(n: int) -> bytes:
    """Variant ``n`` of the placeholder: another size and JPEG quality, same picture."""
    size, quality = _PLACEHOLDER_VARIANTS[n % len(_PLACEHOLDER_VARIANTS)]
    return encode(_placeholder_master().resize(size, Image.Resampling.LANCZOS), "JPEG", quality=quality)


PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (250, 250, 250), (20, 20, 20), (128, 128, 128), (170, 110, 40)]


@lru_cache(maxsize=None)
def drawing_bytes(n: int) -> bytes:
    """Drawing ``n``: a disc on a plain background; ``n % 4`` sets its place, ``n // 4`` the two colours.

    Drawings in one place with the light and dark the same way round have the same perceptual
    hash, whatever their colours: distinct pictures the old rule called copies.
    """
    k = n // 4
    bg = PALETTE[k % len(PALETTE)]
    fg = PALETTE[(k * 7 + 3) % len(PALETTE)]
    if fg == bg:
        fg = PALETTE[(k + 5) % len(PALETTE)]
    x, y = [(20, 15), (90, 20), (35, 70), (120, 80)][n % 4]  # no two are mirror images
    im = Image.new("RGB", (200, 150), bg)
    ImageDraw.Draw(im).ellipse((x, y, x + 70, y + 60), fill=fg)
    return encode(im, "JPEG", quality=90)


@lru_cache(maxsize=None)
def copy_bytes(kind: str, n: int, seed: int = 0) -> bytes:
    """A copy of picture ``n``: cropped, framed, captioned, smaller, re-encoded or mirrored."""
    from PIL import ImageOps

    im = picture(n, seed)
    w, h = im.size
    if kind == "crop":
        im = im.crop((int(0.08 * w), int(0.03 * h), w - int(0.05 * w), h - int(0.09 * h)))
    elif kind == "border":
        im = ImageOps.expand(im, 4, fill=(255, 255, 255))
    elif kind == "text":
        im = im.copy()
        ImageDraw.Draw(im).text((w // 2, h - 14), "© pics.com", fill=(255, 255, 255), anchor="mm", font_size=14)
    elif kind == "smaller":
        im = im.resize((w // 2, h // 2), Image.Resampling.LANCZOS)
    elif kind == "mirror":
        im = ImageOps.mirror(im)
    elif kind != "reencode":
        raise KeyError(kind)
    return encode(im, "JPEG", quality=75)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@lru_cache(maxsize=1)
def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A genuine 1-bit PNG of ``width`` x ``height`` pixels (valid rows and CRCs), tens of kB."""
    row = b"\x00" * (1 + (width + 7) // 8)
    co = zlib.compressobj(9)
    block = row * 1000
    parts = [co.compress(block) for _ in range(height // 1000)]
    parts += [co.compress(row * (height % 1000)), co.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


@lru_cache(maxsize=1)
def gzip_bomb(size: int = 30_000_000) -> bytes:
    return gzip.compress(b"\x00" * size, compresslevel=9)


# --- the server -----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args) -> None:  # quiet
        pass

    # helpers
    def _send(self, code: int, body: bytes = b"", ctype: str = "image/jpeg", headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _redirect(self, location: str, code: int = 302) -> None:
        self._send(code, b"", "text/plain", {"Location": location})

    def _stream(self, chunks, ctype: str = "image/jpeg", length: int | None = None) -> None:
        """Send a body piece by piece; the client may hang up at any time."""
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for c in chunks:
                if self.server.closing.is_set():
                    return
                self.wfile.write(c)
                self.wfile.flush()
        except OSError:  # the client hung up: the usual end of a bad route
            pass

    def do_GET(self) -> None:  # noqa: C901 - one route table
        srv = self.server
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        with srv.lock:
            srv.log.append((path, self.headers.get("Host", "")))
        if srv.latency:
            time.sleep(srv.latency)
        seg = path.strip("/").split("/")
        try:
            if seg[0] == "img" and len(seg) == 2:
                stem, _, ext = seg[1].partition(".")
                fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG"}[ext]
                return self._send(200, image_bytes(int(stem), fmt, srv.seed), "image/" + fmt.lower())
            if seg[0] == "thumb" and len(seg) == 2:
                return self._send(200, thumb_bytes(int(seg[1].partition(".")[0]), srv.seed))
            if seg[0] == "dup":
                return self._send(200, image_bytes(10_000, "JPEG", srv.seed))
            if seg[0] == "drawing" and len(seg) == 2:
                return self._send(200, drawing_bytes(int(seg[1].partition(".")[0])))
            if seg[0] == "copy" and len(seg) == 3:
                return self._send(200, copy_bytes(seg[1], int(seg[2].partition(".")[0]), srv.seed))
            if seg[0] == "placeholder" and len(seg) == 2:
                return self._send(200, placeholder_bytes(int(seg[1].partition(".")[0])))
            if path == "/html-as-jpeg":
                return self._send(200, HTML, "image/jpeg")
            if path == "/page.html":
                return self._send(200, HTML, "text/html; charset=utf-8")
            if seg[0] == "status" and len(seg) == 2:
                return self._send(int(seg[1]), b"", "text/plain")
            if path == "/slow":
                body = image_bytes(0, "JPEG", srv.seed)

                def drip():
                    for b in body:
                        yield bytes([b])
                        if srv.closing.wait(1.0):
                            return

                return self._stream(drip(), length=len(body))
            if path == "/endless":
                def forever():
                    head = image_bytes(0, "JPEG", srv.seed)[:2]
                    yield head
                    while True:
                        yield b"\x00" * 16384

                return self._stream(forever())
            if path == "/bomb.png":
                return self._send(200, bomb_png(), "image/png")
            if path == "/gzip-bomb":
                return self._send(200, gzip_bomb(), "image/jpeg", {"Content-Encoding": "gzip"})
            if path == "/truncated.jpg":
                data = image_bytes(1, "JPEG", srv.seed)
                return self._send(200, data[: len(data) // 2])
            if path == "/empty.jpg":
                return self._send(200, b"")
            if path == "/loop":
                return self._redirect("/loop")
            if seg[0] == "gone" and len(seg) == 2:
                return self._redirect("/placeholder/0.jpg")
            if seg[0] == "chain" and len(seg) == 2:
                k = int(seg[1])
                if k <= 0:
                    return self._send(200, image_bytes(0, "JPEG", srv.seed))
                return self._redirect(f"/chain/{k - 1}", (301, 302, 303, 307, 308)[k % 5])
            if seg[0] == "redirect-port" and len(seg) == 2:
                return self._redirect(urlunsplit(("http", f"127.0.0.1:{int(seg[1])}", "/img/0.jpg", "", "")))
            if path == "/redirect-file":
                return self._redirect("file:///etc/passwd")
            if path in ("/big-cl", "/big-nocl"):
                size = int(query.get("size", [DEFAULT_BIG])[0])

                def body():
                    yield image_bytes(0, "JPEG", srv.seed)[:2]
                    left = size - 2
                    while left > 0:
                        n = min(65536, left)
                        left -= n
                        yield b"\x00" * n

                return self._stream(body(), length=size if path == "/big-cl" else None)
        except (KeyError, ValueError, IndexError):
            pass
        except ConnectionError:
            return
        self._send(404, b"not found", "text/plain")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # 16 parallel connects must not overflow the listen backlog
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        """Clients hang up on bad routes all the time (that is the point): only report real errors."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def __init__(self, addr, *, latency: float, seed: int):
        self.latency = latency
        self.seed = seed
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        super().__init__(addr, _Handler)


class BadServer:
    """A running server; use as a context manager or call :meth:`stop`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency: float = 0.0, seed: int = 0):
        if not host.startswith("127."):
            raise ValueError("the test server only binds to loopback addresses")
        self._srv = _Server((host, port), latency=latency, seed=seed)
        self.host, self.port = self._srv.server_address[:2]
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"badserver-{self.port}", daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return urlunsplit(("http", self.hostport, "", "", ""))

    @property
    def hostport(self) -> str:
        """The ``host:port`` entry for ``TL_ALLOW_HOSTS``."""
        return f"{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + ("" if path.startswith("/") else "/") + path

    @property
    def log(self) -> list[tuple[str, str]]:
        with self._srv.lock:
            return list(self._srv.log)

    @property
    def latency(self) -> float:
        return self._srv.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._srv.latency = value

    def stop(self) -> None:
        self._srv.closing.set()
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> "BadServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(host: str = "127.0.0.1", *, latency: float = 0.0, seed: int = 0) -> BadServer:
    """One server on ``host`` (a loopback address) and a free port."""
    return BadServer(host, latency=latency, seed=seed)


def start_many(n: int, *, latency: float = 0.0, seed: int = 0) -> list[BadServer]:
    """``n`` servers on distinct loopback addresses (127.0.0.1, .2, ...), so each is its own host.

    Each server draws its pictures from its own seed, so pictures differ across hosts too.
    """
    return [BadServer(f"127.0.0.{i + 1}", latency=latency, seed=seed * 100 + i) for i in range(n)]


def allow_env(*servers: BadServer) -> str:
    """The ``TL_ALLOW_HOSTS`` value that lets these servers through the fetcher's guard."""
    return ",".join(s.hostport for s in servers)


def main(argv=None) -> int:
    """Serve from a separate process (the bench does, so the servers' work is not counted as ours).

    Prints one ``host:port`` line per server once every picture is ready, then
    serves until stdin closes.
    """
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="Loopback image servers that play good and bad hosts.")
    ap.add_argument("--hosts", type=int, default=1)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm", type=int, default=0, help="make pictures 0..N-1 of every host before serving")
    args = ap.parse_args(argv)
    servers = start_many(args.hosts, latency=args.latency, seed=args.seed)
    for s in servers:
        for n in range(args.warm):
            image_bytes(n, "JPEG", s._srv.seed)
        print(s.hostport, flush=True)
    try:
        sys.stdin.read()
    finally:
        for s in servers:
            s.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
