"""MongoDB: per server `hello`, `buildInfo`, `replSetGetStatus`, `replSetGetConfig` and a
trimmed `serverStatus` for the probe (`listShards`, `getShardMap` and `balancerStatus` instead
of the replica set commands on a mongos), and one pymongo client per member for the held links.

Parsing is kept apart from I/O: `read_server` asks one server and keeps every reply as it
came, error replies included; `cluster_view` turns the replies of all servers into a
ClusterView. The replies it was written against are reconstructions of MongoDB 4.4 to 8.0
output from public sources (tests/replies/mongodb/README.md), not captures: no MongoDB
server runs where this was written, and tests/test_mongodb_live.py is what checks the
adapter against a real replica set.

Every server is read on a client pinned to it (directConnection), in a thread, within the
spec's probe timeout; pymongo's server selection looks again at an unreachable server every
0.5 s, so one that refuses connections is reported up to 0.5 s past it. A mongos among the
spec's nodes makes a second round: the members of its shards and config servers, read the
same way. While the watch holds links, the probe reads through the held clients instead of
opening new ones each interval.

A spec's secrets `username` and `password`, when it names them, authenticate every
connection (authSource `admin`, the mechanism `auth.mechanism` names or the server's
choice); the user needs the clusterMonitor role. With `tls` every connection is TLS (the
CA of `tls.ca_file`, the client certificate of the secret `tls.client_cert`), and
`auth: {mechanism: MONGODB-X509}` logs in as that certificate's subject instead.
"""
