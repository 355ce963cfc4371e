#!/usr/bin/env python3
"""Tests for the test schema registry (registry.py), against a real server process.
Run with the stack's venv (it has the avro package):
    .stack/venv/bin/python docker/registry/test_registry.py"""
import base64
import json
import os
import socket
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CT = "application/vnd.schemaregistry.v1+json"


def record(*fields, name="User"):
    return json.dumps({"type": "record", "name": name, "namespace": "sinkd.test",
                       "fields": [{"name": "id", "type": "long"}, *fields]})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """registry.py as a subprocess on a free port."""

    def __init__(self, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "registry.py"), "--port", str(self.port)],
            env={**os.environ, **env}, stderr=subprocess.DEVNULL)
        deadline = time.time() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("registry.py did not start")
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)

    def call(self, method, path, body=None, headers=None):
        """(status, decoded JSON body, response headers); errors do not raise."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": CT, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read()), r.headers
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), e.headers


class RegistryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server(REGISTRY_BASIC_AUTH="", REGISTRY_BEARER_TOKEN="")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def call(self, *args, **kw):
        return self.srv.call(*args, **kw)

    def register(self, subject, schema):
        return self.call("POST", f"/subjects/{subject}/versions", {"schema": schema})

    def assertError(self, result, code):
        status, body, _ = result
        self.assertEqual(body.get("error_code"), code, body)
        self.assertEqual(status, int(str(code)[:3]))

    def test_same_schema_same_id_everywhere(self):
        same = record(name="Same")  # a schema no other test registers
        s1, b1, headers = self.register("same-a", same)
        self.assertEqual(s1, 200)
        self.assertEqual(headers["Content-Type"], CT)
        # Whitespace does not make a new schema; a second subject shares the id.
        _, b2, _ = self.register("same-a", json.dumps(json.loads(same), indent=2))
        _, b3, _ = self.register("same-b", same)
        self.assertEqual(b1["id"], b2["id"])
        self.assertEqual(b1["id"], b3["id"])
        self.assertEqual(self.call("GET", "/subjects/same-a/versions")[1], [1])
        status, body, _ = self.call("GET", f"/schemas/ids/{b1['id']}")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body["schema"])["name"], "Same")
        versions = self.call("GET", f"/schemas/ids/{b1['id']}/versions")[1]
        self.assertEqual(sorted(map(json.dumps, versions)), sorted(map(json.dumps, [
            {"subject": "same-a", "version": 1}, {"subject": "same-b", "version": 1}])))

    def test_versions_and_lookup(self):
        v1 = record()
        v2 = record({"name": "email", "type": "string", "default": ""})
        id1 = self.register("ver", v1)[1]["id"]
        id2 = self.register("ver", v2)[1]["id"]
        self.assertNotEqual(id1, id2)
        self.assertEqual(self.call("GET", "/subjects/ver/versions")[1], [1, 2])
        self.assertIn("ver", self.call("GET", "/subjects")[1])
        for spec, want in (("1", (1, id1)), ("latest", (2, id2)), ("-1", (2, id2))):
            body = self.call("GET", f"/subjects/ver/versions/{spec}")[1]
            self.assertEqual((body["subject"], body["version"], body["id"]), ("ver",) + want)
            self.assertNotIn("schemaType", body)  # omitted for AVRO
        body = self.call("POST", "/subjects/ver", {"schema": v1})[1]
        self.assertEqual((body["version"], body["id"]), (1, id1))
        self.assertError(self.call("GET", "/subjects/ver/versions/3"), 40402)
        self.assertError(self.call("GET", "/subjects/ver/versions/zero"), 42202)

    def test_backward_compatibility(self):
        self.assertEqual(self.call("GET", "/config")[1], {"compatibilityLevel": "BACKWARD"})
        self.register("compat", record())
        with_default = record({"name": "age", "type": "int", "default": 0})
        without_default = record({"name": "age", "type": "int"})
        chk = self.call("POST", "/compatibility/subjects/compat/versions/latest", {"schema": without_default})
        self.assertEqual(chk[1], {"is_compatible": False})
        self.assertError(self.register("compat", without_default), 409)
        self.assertEqual(self.register("compat", with_default)[0], 200)
        # NONE on the subject lets anything through.
        self.assertEqual(self.call("PUT", "/config/compat", {"compatibility": "NONE"})[1], {"compatibility": "NONE"})
        self.assertEqual(self.call("GET", "/config/compat")[1], {"compatibilityLevel": "NONE"})
        self.assertEqual(self.register("compat", record({"name": "x", "type": "int"}))[0], 200)

    def test_errors(self):
        self.assertError(self.call("GET", "/subjects/nope/versions"), 40401)
        self.assertError(self.call("POST", "/subjects/nope", {"schema": record()}), 40401)
        self.register("err", record())
        self.assertError(self.call("POST", "/subjects/err", {"schema": record(name="Other")}), 40403)
        self.assertError(self.call("GET", "/schemas/ids/99999"), 40403)
        self.assertError(self.register("err", '{"type": "record", "name": "X"}'), 42201)
        self.assertError(self.register("err", "not json"), 42201)
        self.assertError(self.call("GET", "/no/such/route"), 404)

    def test_references(self):
        self.register("ref-address", record(name="Address"))
        schema = json.dumps({"type": "record", "name": "Customer", "namespace": "sinkd.test",
                             "fields": [{"name": "home", "type": "sinkd.test.Address"}]})
        refs = [{"name": "sinkd.test.Address", "subject": "ref-address", "version": 1}]
        status, body, _ = self.call("POST", "/subjects/ref-customer/versions",
                                    {"schema": schema, "references": refs})
        self.assertEqual(status, 200, body)
        got = self.call("GET", f"/schemas/ids/{body['id']}")[1]
        self.assertEqual(got["references"], refs)
        missing = [{"name": "sinkd.test.Address", "subject": "ref-address", "version": 9}]
        self.assertError(self.call("POST", "/subjects/ref-x/versions",
                                   {"schema": schema, "references": missing}), 42201)

    def test_delete(self):
        self.register("del", record())
        self.assertEqual(self.call("DELETE", "/subjects/del")[1], [1])
        self.assertError(self.call("GET", "/subjects/del/versions"), 40401)


class AuthTest(unittest.TestCase):
    def test_basic_auth_required(self):
        srv = Server(REGISTRY_BASIC_AUTH="alice:secret")
        try:
            self.assertEqual(srv.call("GET", "/subjects")[:2], (401, {"error_code": 401, "message": "Unauthorized"}))
            bad = "Basic " + base64.b64encode(b"alice:wrong").decode()
            self.assertEqual(srv.call("GET", "/subjects", headers={"Authorization": bad})[0], 401)
            good = "Basic " + base64.b64encode(b"alice:secret").decode()
            self.assertEqual(srv.call("GET", "/subjects", headers={"Authorization": good})[:2], (200, []))
        finally:
            srv.stop()

    def test_karapace_style_401_has_no_error_code(self):
        srv = Server(REGISTRY_BASIC_AUTH="alice:secret", REGISTRY_STYLE="karapace")
        try:
            self.assertEqual(srv.call("GET", "/subjects")[:2], (401, {"message": "Unauthorized"}))
        finally:
            srv.stop()


if __name__ == "__main__":
    unittest.main()
