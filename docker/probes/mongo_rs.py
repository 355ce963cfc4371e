"""Single-node replica set helper for docker/up.
  mongo_rs.py initiate PORT  -- replSetInitiate with member 127.0.0.1:PORT (idempotent)
  mongo_rs.py check PORT     -- exit 0 only if the node is a writable PRIMARY"""
import sys

from pymongo import MongoClient
from pymongo.errors import OperationFailure

cmd, port = sys.argv[1], sys.argv[2]
# directConnection: the replica set may not exist yet, so no discovery.
client = MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true",
                     serverSelectionTimeoutMS=3000)
if cmd == "initiate":
    try:
        client.admin.command("replSetInitiate", {
            "_id": "rs0", "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]})
    except OperationFailure as e:
        if e.code != 23:  # AlreadyInitialized
            raise
elif cmd == "check":
    sys.exit(0 if client.admin.command("hello").get("isWritablePrimary") else 1)
else:
    sys.exit(f"unknown command {cmd}")
