"""GET /openapi.yaml serves an OpenAPI 3 description that covers every
endpoint of docs/api.md."""
import os
import re

import requests
import yaml

from conftest import ROOT

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
UNAUTHENTICATED = {("GET", "/health"), ("GET", "/openapi.yaml")}


def normalize(path):
    """A path with every placeholder written '{}', so that ':id' in the
    markdown and '{sandboxID}' in the spec compare equal."""
    return re.sub(r"\{[^}/]*\}", "{}", path)


def documented_endpoints():
    """(METHOD, /path) pairs named in docs/api.md's '### ' headings, e.g.
    '### GET /sandboxes/:id/processes/:pid/stream — re-attach' or
    '### GET /events/sandboxes and GET /events/sandboxes/:id'.  ':x'
    segments become '{x}'; query strings and '(alias ...)' parts are
    ignored."""
    with open(os.path.join(ROOT, "docs", "api.md")) as f:
        text = f.read()
    found = []
    for line in text.splitlines():
        if not line.startswith("### "):
            continue
        heading = re.sub(r"\(alias[^)]*\)", "", line[4:])
        for method, path in re.findall(r"\b(%s) (/[^\s,?]*)" % "|".join(METHODS), heading):
            path = re.sub(r"/:([A-Za-z_]+)", r"/{\1}", path.rstrip("/"))
            found.append((method, path))
    return found


def fetch_spec(sbxd):
    r = requests.get(sbxd.url + "/openapi.yaml", timeout=30)  # no API key
    assert r.status_code == 200, r.text
    return yaml.safe_load(r.text)


def test_openapi_served_without_key(sbxd):
    r = requests.get(sbxd.url + "/openapi.yaml", timeout=30)
    assert r.status_code == 200, r.text
    assert "yaml" in r.headers.get("Content-Type", "")
    spec = yaml.safe_load(r.text)
    assert isinstance(spec, dict)
    assert str(spec["openapi"]).startswith("3.")
    assert spec["paths"]


def test_headings_parsed():
    eps = documented_endpoints()
    # a sanity check on the parser itself: the markdown names these
    for ep in [("POST", "/sandboxes"), ("GET", "/sandboxes/{id}"), ("POST", "/sandboxes/{id}/connect"),
               ("GET", "/sandboxes/{id}/processes/{pid}/stream"), ("GET", "/sandboxes/{id}/filesystem/list"),
               ("GET", "/events/sandboxes/{id}"), ("PATCH", "/events/webhooks/{id}")]:
        assert ep in eps, ep
    assert len(eps) >= 30


def test_every_documented_endpoint_is_in_the_spec(sbxd):
    spec = fetch_spec(sbxd)
    paths = {normalize(p): item for p, item in spec["paths"].items()}
    missing = []
    for method, path in documented_endpoints():
        item = paths.get(normalize(path))
        if item is None or method.lower() not in item:
            missing.append(f"{method} {path}")
    assert not missing, "not in docs/openapi.yaml: " + ", ".join(missing)


def test_every_operation_documents_a_client_error(sbxd):
    spec = fetch_spec(sbxd)
    lacking = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method.upper() not in METHODS or (method.upper(), path) in UNAUTHENTICATED:
                continue
            codes = [str(c) for c in op.get("responses", {})]
            if not any(c.startswith("4") for c in codes):
                lacking.append(f"{method.upper()} {path}")
    assert not lacking, "no 4xx response: " + ", ".join(lacking)


def table_routes():
    """(METHOD, /pattern) of every entry of src/api/routes.c's route table,
    from its '{ "METHOD", "/pattern", handler, ... },' lines.  Entries for
    any method ("*") and prefix patterns ("/x/*") stand for several
    endpoints, each with its own heading: they are left out."""
    with open(os.path.join(ROOT, "src", "api", "routes.c")) as f:
        text = f.read()
    found = []
    for method, pattern in re.findall(r'^\s*\{\s*"([A-Z*]+)",\s*"(/[^"]*)"', text, re.M):
        if method == "*" or pattern.endswith("/*"):
            continue
        found.append((method, pattern))
    return found


def route_matches(pattern, path):
    """Does the route PATTERN (':x' placeholders) name PATH ('{x}'
    placeholders)?  A placeholder of the route matches any one segment, a
    placeholder or a word: '/processes/:pid/:action' is documented as
    '/processes/{pid}/signal' and its siblings."""
    p, q = pattern.strip("/").split("/"), path.rstrip("/").strip("/").split("/")
    if len(p) != len(q):
        return False
    for a, b in zip(p, q):
        if a.startswith(":"):
            continue
        if a != b or b.startswith("{"):
            return False
    return True


def documented_with_aliases():
    """documented_endpoints(), plus the aliases a heading names, as in
    '### POST /sandboxes/:id/connect (alias: /resume)': the path with its
    last segment replaced."""
    found = list(documented_endpoints())
    with open(os.path.join(ROOT, "docs", "api.md")) as f:
        for line in f:
            if not line.startswith("### "):
                continue
            m = re.search(r"\b(%s) (/\S*)\s*\(alias:?\s*(/[^)\s]*)\)" % "|".join(METHODS), line)
            if m:
                method, path, alias = m.groups()
                base = re.sub(r"/:([A-Za-z_]+)", r"/{\1}", path.rstrip("/")).rsplit("/", 1)[0]
                found.append((method, base + alias))
    return found


def test_route_table_parsed():
    routes = table_routes()
    for r in [("POST", "/sandboxes"), ("POST", "/api/sandbox/:id/run"), ("GET", "/v2/sandboxes/:id/logs")]:
        assert r in routes, r
    assert all(m != "*" for m, _ in routes)
    assert route_matches("/sandboxes/:id/processes/:pid/:action", "/sandboxes/{id}/processes/{pid}/signal")
    assert not route_matches("/sandboxes/:id/logs", "/sandboxes/{id}/files")
    assert not route_matches("/api/sandbox/create", "/api/sandbox/{id}")


def test_every_route_is_documented():
    """A route added to the table without a heading in docs/api.md and a
    path in docs/openapi.yaml fails here."""
    docs = documented_with_aliases()
    with open(os.path.join(ROOT, "docs", "openapi.yaml")) as f:
        spec = yaml.safe_load(f)
    undocumented, unspecified = [], []
    for method, pattern in table_routes():
        if not any(m == method and route_matches(pattern, p) for m, p in docs):
            undocumented.append(f"{method} {pattern}")
        if not any(method.lower() in item and route_matches(pattern, p) for p, item in spec["paths"].items()):
            unspecified.append(f"{method} {pattern}")
    assert not undocumented, "no '### METHOD /path' heading in docs/api.md: " + ", ".join(undocumented)
    assert not unspecified, "not in docs/openapi.yaml: " + ", ".join(unspecified)
