#!/usr/bin/env python3
"""Serves the release artefacts of one directory (dist/) on 127.0.0.1, as the places a user
gets them from once they are published: an npm registry, a Python package index and a
release download page.

Used by `scripts/dist.sh --check` and `scripts/check-examples.py` to install the packages
the way a user does (`npm install update-lock`, `pip install update-lock`, `curl` of a
release tarball), so npm and pip themselves choose the package for the platform.
Usage: dist-server.py DIR; prints the base URL on its first line, then serves until killed:
  BASE/NAME            npm packument of every `*.tgz` in DIR that holds a package.json
  BASE/simple/NAME/    the PEP 503 index of the wheels and sdists in DIR
  BASE/files/FILE      any file of DIR (the release download URL is BASE/files)
Anything else gets 404 (npm and pip then treat the package as missing)."""
import base64
import hashlib
import html
import http.server
import json
import pathlib
import sys
import tarfile
import urllib.parse


def load(directory: pathlib.Path) -> tuple[dict, dict]:
    """Packuments by package name, and tarball bytes by file name."""
    packuments: dict = {}
    tarballs: dict = {}
    for tgz in sorted(directory.glob("*.tgz")):
        with tarfile.open(tgz) as tar:
            member = tar.extractfile("package/package.json")
            if member is None:
                continue
            manifest = json.load(member)
        data = tgz.read_bytes()
        tarballs[tgz.name] = data
        manifest["dist"] = {
            "tarball": tgz.name,  # made absolute per request (the port is known then)
            "shasum": hashlib.sha1(data).hexdigest(),
            "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
        }
        doc = packuments.setdefault(
            manifest["name"], {"name": manifest["name"], "versions": {}, "dist-tags": {}}
        )
        doc["versions"][manifest["version"]] = manifest
        doc["dist-tags"]["latest"] = manifest["version"]
    return packuments, tarballs


def normalize(name: str) -> str:
    """PEP 503 name normalisation."""
    return "-".join(filter(None, "".join(c if c.isalnum() else "-" for c in name.lower()).split("-")))


def simple_index(project: str, files: dict) -> "bytes | None":
    """The PEP 503 page of one project: its wheels and sdists in the directory."""
    links = []
    for name, path in sorted(files.items()):
        if not name.endswith((".whl", ".tar.gz")):
            continue
        dist = name.split("-", 1)[0]
        if normalize(dist) != normalize(project):
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        links.append(f'<a href="../../files/{html.escape(name)}#sha256={digest}">{html.escape(name)}</a><br>')
    if not links:
        return None
    return ("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n").encode()


def main() -> int:
    directory = pathlib.Path(sys.argv[1])
    packuments, tarballs = load(directory)
    files = {p.name: p for p in directory.iterdir() if p.is_file()}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urllib.parse.unquote(self.path.split("?", 1)[0]).lstrip("/")
            base = f"http://127.0.0.1:{self.server.server_address[1]}/"
            if path.startswith("-/tarballs/") and path[len("-/tarballs/") :] in tarballs:
                body, kind = tarballs[path[len("-/tarballs/") :]], "application/octet-stream"
            elif path.startswith("files/") and path[len("files/") :] in files:
                body, kind = files[path[len("files/") :]].read_bytes(), "application/octet-stream"
            elif path.startswith("simple/"):
                body, kind = simple_index(path[len("simple/") :].strip("/"), files), "text/html"
                if body is None:
                    self.send_error(404)
                    return
            elif path in packuments:
                doc = json.loads(json.dumps(packuments[path]))
                for manifest in doc["versions"].values():
                    manifest["dist"]["tarball"] = base + "-/tarballs/" + manifest["dist"]["tarball"]
                body, kind = json.dumps(doc).encode(), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"http://127.0.0.1:{server.server_address[1]}/", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
