"""ZooKeeper: the four-letter words `srvr`, `mntr` and `conf` for the probe, one kazoo
session per member for the held links.

The parsers were written against replies recorded from ZooKeeper 3.9.5
(tests/replies/zookeeper/).

A spec's `auth` (SASL DIGEST-MD5, or ZooKeeper's `digest` scheme) with its secrets
`username` and `password` logs the held links in. ZooKeeper answers the four-letter words
to anyone who reaches the client port, logged in or not, so they still read role, zxid and
the rest; to know the login works, the probe also opens a session per member, logs in and
reads `/`'s stat, then closes it (two transactions on the ensemble, per member and probe).
A refused login is reported on the member that refused it, which stays reachable with its
role (`auth_failed`): a wrong password must never read as a member down, nor start its
restart. Credentials are read from their references at every probe, never logged.
"""
