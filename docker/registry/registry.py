#!/usr/bin/env python3
"""A small Confluent-compatible Schema Registry, for sinkd's tests only.

No Confluent-compatible registry server can be installed from the registries this
project's machines reach, so the local test stack (docker/up) runs this one. It
follows the public Confluent REST API (subjects, versions, global schema ids,
lookup, compatibility levels and checks, config, soft/permanent deletes, the
application/vnd.schemaregistry.v1+json content type, {"error_code", "message"}
errors with Confluent's codes) for AVRO schemas, keeping all state in memory.

sinkd itself must only rely on the public Confluent API, never on anything
particular to this server: in production it talks to Confluent Schema Registry,
Karapace, Apicurio (compat API), Redpanda, ...

Schema parsing, the schema identity and the compatibility rules all come from
the Apache `avro` package (ReaderWriterCompatibilityChecker); none are hand-written.
A schema's identity is its normalized JSON (like Confluent's canonical string:
whitespace and namespace spelling do not matter, defaults/docs/logical types do)
plus its references.

    python registry.py --host 127.0.0.1 --port 8081
    REGISTRY_BASIC_AUTH=user:pass    require HTTP basic auth on every request
    REGISTRY_BEARER_TOKEN=token      or accept this bearer token
    REGISTRY_STYLE=karapace          answer 401 as Karapace does: {"message": "Unauthorized"},
                                     with no error_code (clients must still show it)
    --journal FILE                   keep state across restarts: every change that succeeded
                                     is appended to FILE and replayed at start, as Confluent's
                                     registry replays its _schemas topic (same ids after a
                                     restart, for tests that take the registry down)
"""
import argparse
import base64
import hmac
import json
import os
import re
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.name import Names

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
BODY_TYPES = {CONTENT_TYPE, "application/vnd.schemaregistry+json",
              "application/json", "application/octet-stream"}
LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD",
          "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE")
MAX_VERSION = 2**31 - 1


class ApiError(Exception):
    """An error answered as {"error_code", "message"}; HTTP status = first 3 digits."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message
        self.status = int(str(code)[:3])


def subject_not_found(subject):
    return ApiError(40401, f"Subject '{subject}' not found.")


class Schema:
    def __init__(self, schema_id, text, refs, parsed):
        self.id, self.text, self.refs, self.parsed = schema_id, text, refs, parsed


class Version:
    def __init__(self, subject, number, schema_id):
        self.subject, self.number, self.schema_id = subject, number, schema_id
        self.deleted = False  # soft-deleted: hidden, but keeps its number


class Registry:
    def __init__(self):
        self.lock = threading.RLock()
        self.schemas = {}       # id -> Schema
        self.ids = {}           # (normalized text, references) -> id
        self.subjects = {}      # subject -> [Version], oldest first
        self.level = "BACKWARD"
        self.subject_levels = {}

    # ---- parsing -------------------------------------------------------------
    def parse(self, text, refs, schema_type):
        if schema_type not in (None, "AVRO"):
            raise ApiError(42201, f"Invalid schema: schemaType {schema_type} is not supported "
                                  "by this test registry (AVRO only)")
        names = Names()
        self._load_refs(refs, names, set())
        ref_names = dict(names.names)
        try:
            parsed = avro.schema.make_avsc_object(json.loads(text), names)
        except Exception as e:  # avro raises several kinds on bad input
            raise ApiError(42201, f"Invalid schema {text}: {e}")
        # Referenced types stay references (by name) in the stored text.
        out = Names()
        out.names = ref_names
        return parsed, json.dumps(parsed.to_json(out), separators=(",", ":"))

    def _load_refs(self, refs, names, seen):
        """Parse referenced schemas (and theirs) into `names`, dependencies first."""
        for ref in refs:
            key = (ref["subject"], ref["version"])
            if key in seen:
                continue
            seen.add(key)
            try:
                version = self.version(ref["subject"], str(ref["version"]))
            except ApiError:
                raise ApiError(42201, f"Invalid schema: reference '{ref['name']}' points to "
                                      f"subject '{key[0]}' version {key[1]}, which does not exist")
            target = self.schemas[version.schema_id]
            self._load_refs(target.refs, names, seen)
            avro.schema.make_avsc_object(json.loads(target.text), names)

    @staticmethod
    def schema_request(body):
        if not isinstance(body, dict) or not isinstance(body.get("schema"), str) or not body["schema"].strip():
            raise ApiError(42201, "Invalid schema: the request needs a non-empty \"schema\" string")
        refs = body.get("references") or []
        if not isinstance(refs, list) or not all(
                isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("subject"), str)
                and isinstance(r.get("version"), int) for r in refs):
            raise ApiError(42201, "Invalid schema: each reference needs name, subject and an integer version")
        refs = [{"name": r["name"], "subject": r["subject"], "version": r["version"]} for r in refs]
        return body["schema"], refs, body.get("schemaType")

    # ---- lookups -------------------------------------------------------------
    def live(self, subject, deleted=False):
        return [v for v in self.subjects.get(subject, []) if deleted or not v.deleted]

    def version(self, subject, spec, deleted=False):
        versions = self.live(subject, deleted)
        if not versions:
            raise subject_not_found(subject)
        if spec in ("latest", "-1"):
            return versions[-1]
        if not re.fullmatch(r"[0-9]+", spec) or not 1 <= int(spec) <= MAX_VERSION:
            raise ApiError(42202, f"The specified version '{spec}' is not a valid version id. Allowed "
                                  f"values are between [1, {MAX_VERSION}] and the string \"latest\"")
        for v in versions:
            if v.number == int(spec):
                return v
        raise ApiError(40402, f"Version {spec} not found.")

    def schema(self, schema_id):
        try:
            return self.schemas[int(schema_id)]
        except (ValueError, KeyError):
            raise ApiError(40403, f"Schema {schema_id} not found")

    def level_of(self, subject):
        return self.subject_levels.get(subject, self.level)

    # ---- compatibility -------------------------------------------------------
    def incompatibilities(self, subject, new, against, level):
        """Messages for every rule of `level` that `new` breaks; [] = compatible."""
        if level == "NONE" or not against:
            return []
        if not level.endswith("_TRANSITIVE"):
            against = against[-1:]  # non-transitive levels look at the latest only
        base = level.replace("_TRANSITIVE", "")
        messages = []
        for v in against:
            old = self.schemas[v.schema_id].parsed
            checks = []
            if base in ("BACKWARD", "FULL"):
                checks.append((new, old, "the new schema cannot read data written with"))
            if base in ("FORWARD", "FULL"):
                checks.append((old, new, "data written with the new schema cannot be read by"))
            for reader, writer, what in checks:
                result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
                if result.compatibility is not SchemaCompatibilityType.compatible:
                    messages.append(f"{what} subject '{subject}' version {v.number} ({level}): "
                                    f"{'; '.join(sorted(result.messages))} at {', '.join(sorted(result.locations))}")
        return messages

    # ---- changes -------------------------------------------------------------
    def register(self, subject, body):
        text, refs, schema_type = self.schema_request(body)
        parsed, normalized = self.parse(text, refs, schema_type)
        key = (normalized, json.dumps(refs, sort_keys=True))
        existing = self.ids.get(key)
        live = self.live(subject)
        for v in live:
            if v.schema_id == existing:
                return existing  # already in this subject: no new version
        problems = self.incompatibilities(subject, parsed, live, self.level_of(subject))
        if problems:
            raise ApiError(409, "Schema being registered is incompatible with an earlier schema; "
                                + " | ".join(problems))
        if existing is None:
            existing = len(self.schemas) + 1
            self.schemas[existing] = Schema(existing, normalized, refs, parsed)
            self.ids[key] = existing
        versions = self.subjects.setdefault(subject, [])
        versions.append(Version(subject, max((v.number for v in versions), default=0) + 1, existing))
        return existing

    def referenced(self, subject, number):
        """Ids of live schemas that reference subject/version."""
        live_ids = {v.schema_id for vs in self.subjects.values() for v in vs if not v.deleted}
        return sorted(i for i in live_ids for r in self.schemas[i].refs
                      if (r["subject"], r["version"]) == (subject, number))


def version_json(reg, v):
    s = reg.schemas[v.schema_id]
    out = {"subject": v.subject, "version": v.number, "id": s.id, "schema": s.text}
    if s.refs:
        out["references"] = s.refs
    return out


def schema_json(s):
    return {"schema": s.text, **({"references": s.refs} if s.refs else {})}


def flag(query, name):
    return query.get(name, ["false"])[-1].lower() == "true"


# ---- routes: (method, path regex, handler(reg, query, body, *path args)) ---------
ROUTES = []


def route(method, pattern):
    def add(fn):
        ROUTES.append((method, re.compile("^" + pattern + "/?$"), fn))
        return fn
    return add


@route("GET", "")
def root(reg, q, body):
    return {}


@route("GET", "/schemas/types")
def schema_types(reg, q, body):
    return ["AVRO"]


@route("GET", "/schemas/ids/([^/]+)")
def get_schema(reg, q, body, sid):
    return schema_json(reg.schema(sid))


@route("GET", "/schemas/ids/([^/]+)/schema")
def get_schema_raw(reg, q, body, sid):
    return reg.schema(sid).text.encode()


@route("GET", "/schemas/ids/([^/]+)/versions")
def get_schema_versions(reg, q, body, sid):
    s = reg.schema(sid)
    return [{"subject": v.subject, "version": v.number}
            for vs in reg.subjects.values() for v in vs
            if v.schema_id == s.id and (not v.deleted or flag(q, "deleted"))]


@route("GET", "/schemas/ids/([^/]+)/subjects")
def get_schema_subjects(reg, q, body, sid):
    return sorted({v["subject"] for v in get_schema_versions(reg, q, body, sid)})


@route("GET", "/subjects")
def list_subjects(reg, q, body):
    return sorted(s for s in reg.subjects if reg.live(s, flag(q, "deleted")))


@route("GET", "/subjects/([^/]+)/versions")
def list_versions(reg, q, body, subject):
    versions = reg.live(subject, flag(q, "deleted"))
    if not versions:
        raise subject_not_found(subject)
    return [v.number for v in versions]


@route("POST", "/subjects/([^/]+)/versions")
def register(reg, q, body, subject):
    return {"id": reg.register(subject, body)}


@route("GET", "/subjects/([^/]+)/versions/([^/]+)")
def get_version(reg, q, body, subject, spec):
    return version_json(reg, reg.version(subject, spec, flag(q, "deleted")))


@route("GET", "/subjects/([^/]+)/versions/([^/]+)/schema")
def get_version_raw(reg, q, body, subject, spec):
    return reg.schemas[reg.version(subject, spec).schema_id].text.encode()


@route("GET", "/subjects/([^/]+)/versions/([^/]+)/referencedby")
def referenced_by(reg, q, body, subject, spec):
    return reg.referenced(subject, reg.version(subject, spec).number)


@route("POST", "/subjects/([^/]+)")
def lookup(reg, q, body, subject):
    text, refs, schema_type = reg.schema_request(body)
    versions = reg.live(subject, flag(q, "deleted"))
    if not versions:
        raise subject_not_found(subject)
    _, normalized = reg.parse(text, refs, schema_type)
    sid = reg.ids.get((normalized, json.dumps(refs, sort_keys=True)))
    for v in versions:
        if v.schema_id == sid:
            return version_json(reg, v)
    raise ApiError(40403, "Schema not found")


@route("DELETE", "/subjects/([^/]+)")
def delete_subject(reg, q, body, subject):
    everything = reg.live(subject, deleted=True)
    if not everything:
        raise subject_not_found(subject)
    live = reg.live(subject)
    if flag(q, "permanent"):
        if live:
            raise ApiError(40405, f"Subject '{subject}' was not deleted first before being permanently deleted")
        del reg.subjects[subject]
        reg.subject_levels.pop(subject, None)
        return [v.number for v in everything]
    if not live:
        raise ApiError(40404, f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently")
    for v in live:
        check_unreferenced(reg, v)
    for v in live:
        v.deleted = True
    return [v.number for v in live]


@route("DELETE", "/subjects/([^/]+)/versions/([^/]+)")
def delete_version(reg, q, body, subject, spec):
    permanent = flag(q, "permanent")
    # "latest" means the latest live version, unless deleting permanently.
    v = reg.version(subject, spec, deleted=permanent or spec not in ("latest", "-1"))
    check_unreferenced(reg, v)
    if permanent:
        if not v.deleted:
            raise ApiError(40407, f"Subject '{subject}' Version {v.number} was not deleted first "
                                  "before being permanently deleted")
        reg.subjects[subject].remove(v)
        if not reg.subjects[subject]:
            del reg.subjects[subject]
    elif v.deleted:
        raise ApiError(40406, f"Subject '{subject}' Version {v.number} was soft deleted. "
                              "Set permanent=true to delete permanently")
    else:
        v.deleted = True
    return v.number


def check_unreferenced(reg, v):
    if reg.referenced(v.subject, v.number):
        raise ApiError(42206, f"One or more references exist to the schema {{subject={v.subject}, version={v.number}}}")


@route("POST", "/compatibility/subjects/([^/]+)/versions(?:/([^/]+))?")
def check_compatibility(reg, q, body, subject, spec=None):
    text, refs, schema_type = reg.schema_request(body)
    parsed, _ = reg.parse(text, refs, schema_type)
    level = reg.level_of(subject)
    if spec is None:  # no version: whatever the subject's level asks for
        against = reg.live(subject)
    elif spec in ("latest", "-1") and not reg.live(subject):
        against = []  # nothing registered yet: anything is compatible
    else:
        against = [reg.version(subject, spec)]
        level = level.replace("_TRANSITIVE", "")
    problems = reg.incompatibilities(subject, parsed, against, level)
    out = {"is_compatible": not problems}
    if flag(q, "verbose"):
        out["messages"] = problems
    return out


def new_level(body):
    level = str(body.get("compatibility", "") if isinstance(body, dict) else "").upper()
    if level not in LEVELS:
        raise ApiError(42203, "Invalid compatibility level. Valid values are none, backward, forward, "
                              "full, backward_transitive, forward_transitive, and full_transitive")
    return level


@route("GET", "/config")
def get_config(reg, q, body):
    return {"compatibilityLevel": reg.level}


@route("PUT", "/config")
def put_config(reg, q, body):
    reg.level = new_level(body)
    return {"compatibility": reg.level}


@route("GET", "/config/([^/]+)")
def get_subject_config(reg, q, body, subject):
    if subject in reg.subject_levels:
        return {"compatibilityLevel": reg.subject_levels[subject]}
    if flag(q, "defaultToGlobal"):
        return {"compatibilityLevel": reg.level}
    raise ApiError(40408, f"Subject '{subject}' does not have subject-level compatibility configured")


@route("PUT", "/config/([^/]+)")
def put_subject_config(reg, q, body, subject):
    reg.subject_levels[subject] = new_level(body)
    return {"compatibility": reg.subject_levels[subject]}


@route("DELETE", "/config/([^/]+)")
def delete_subject_config(reg, q, body, subject):
    if subject not in reg.subject_levels and not reg.live(subject):
        raise subject_not_found(subject)
    return {"compatibilityLevel": reg.subject_levels.pop(subject, reg.level)}


@route("GET", "/mode")
def get_mode(reg, q, body):
    return {"mode": "READWRITE"}


# ---- HTTP ------------------------------------------------------------------------
def call(reg, method, path, body):
    """Runs one request against the registry: the route's answer, or an ApiError."""
    url = urlsplit(path)
    query = parse_qs(url.query)
    path_matched = False
    for m, regex, fn in ROUTES:
        match = regex.match(url.path)
        if not match:
            continue
        path_matched = True
        if m == method:
            args = [unquote(a) if a is not None else None for a in match.groups()]
            return fn(reg, query, body, *args)
    if path_matched:
        raise ApiError(405, "HTTP 405 Method Not Allowed")
    raise ApiError(404, "HTTP 404 Not Found")


def replay(reg, journal):
    """Applies the changes a journal recorded, in order (missing journal: nothing)."""
    if not os.path.exists(journal):
        return
    with open(journal) as f:
        for line in f:
            if line.strip():
                change = json.loads(line)
                call(reg, change["method"], change["path"], change["body"])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients expect
    server_version = "sinkd-test-registry/1"
    registry = None  # set in main()
    journal = None  # set in main() with --journal
    basic = os.environ.get("REGISTRY_BASIC_AUTH")
    bearer = os.environ.get("REGISTRY_BEARER_TOKEN")
    style = os.environ.get("REGISTRY_STYLE", "confluent")

    def do_GET(self):
        self.handle_api("GET")

    def do_POST(self):
        self.handle_api("POST")

    def do_PUT(self):
        self.handle_api("PUT")

    def do_DELETE(self):
        self.handle_api("DELETE")

    def handle_api(self, method):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            self.check_auth()
            status, payload = 200, self.dispatch(method, raw)
        except ApiError as e:
            status, payload = e.status, {"error_code": e.code, "message": e.message}
            if status == 401 and self.style == "karapace":
                payload = {"message": e.message}
        except Exception as e:  # a bug here must not look like a client error
            traceback.print_exc()
            status, payload = 500, {"error_code": 50001, "message": f"Error in the backend data store: {e}"}
        data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if status == 401 and self.basic:
            self.send_header("WWW-Authenticate", 'Basic realm="sinkd-test-registry"')
        self.end_headers()
        self.wfile.write(data)

    def check_auth(self):
        if not self.basic and not self.bearer:
            return
        given = self.headers.get("Authorization", "")
        ok = False
        if self.basic and given.startswith("Basic "):
            want = "Basic " + base64.b64encode(self.basic.encode()).decode()
            ok = hmac.compare_digest(given.encode(), want.encode())
        if self.bearer and given.startswith("Bearer "):
            ok = hmac.compare_digest(given[7:].strip().encode(), self.bearer.encode())
        if not ok:
            raise ApiError(401, "Unauthorized")

    def dispatch(self, method, raw):
        body = self.parse_body(raw) if method in ("POST", "PUT") else None
        with self.registry.lock:
            result = call(self.registry, method, self.path, body)
            if method != "GET" and self.journal:
                with open(self.journal, "a") as f:
                    f.write(json.dumps({"method": method, "path": self.path, "body": body}) + "\n")
            return result

    def parse_body(self, raw):
        media = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media and media not in BODY_TYPES:
            raise ApiError(415, "HTTP 415 Unsupported Media Type")
        try:
            return json.loads(raw or b"{}")
        except ValueError as e:
            raise ApiError(400, f"Invalid JSON in request body: {e}")

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--journal", help="append changes here and replay them at start")
    args = parser.parse_args()
    Handler.registry = Registry()
    if args.journal:
        replay(Handler.registry, args.journal)
        Handler.journal = args.journal
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    sys.stderr.write(f"schema registry listening on http://{args.host}:{server.server_address[1]}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
