"""Kafka: the brokers' own protocol, with kafka-python's message classes and its sans-I/O
parser, over connections this package holds itself.

Why not `KafkaAdminClient`: it bootstraps eagerly (blocking up to its timeout), backs off
reconnects exponentially up to 30 s, refreshes metadata in a thread of its own and has no
notion of "ask this broker, within this deadline". The probe must check every broker
directly within `timeout_s`, and a link that broke must reconnect at the very next probe.

Where each fact comes from (checked against Kafka 4.3.1, KRaft; replies recorded in
tests/replies/kafka/):

- A broker is up when it answers DescribeCluster on its own address; its version is what
  kafka-python infers from its ApiVersions reply ("4.3": Kafka does not report its own).
- The active controller is the leader of the metadata log, `__cluster_metadata`, from
  DescribeQuorum (any broker forwards it to the controller). Not the `controller_id` of
  Metadata or DescribeCluster: in KRaft both name a random alive broker (30 requests to one
  broker named brokers 1, 2 and 3 while 3 was the controller).
- Registered brokers, fenced or not: DescribeCluster v2 with `include_fenced_brokers`.
  Metadata lists the unfenced ones only. A SIGKILLed broker is fenced after
  `broker.session.timeout.ms`; only then does Kafka take it out of the ISRs and list its
  replicas as offline.
- Partitions: Metadata (all topics, internal ones such as `__consumer_offsets` included):
  the actual leader, replicas in assignment order, ISR, offline replicas.
- `min.insync.replicas` per topic: DescribeConfigs (the effective value, defaults
  included), refreshed every MIN_ISR_TTL_S and at once for a topic not seen before.
- High watermark per partition: ListOffsets (latest, read-uncommitted) to its leader.
- Follower lag: ListOffsets with replica id -2 (Kafka's "debugging" replica id) makes a
  broker answer with its own replica's log end offset, follower or leader, so
  leader LEO - follower LEO is each follower's lag in messages. Kafka exposes follower lag
  nowhere else in its client protocol (only in JMX metrics). It costs one request per
  broker per probe, about a third of a probe's CPU, so it is read only for a spec that
  sets `expect.max_lag`; otherwise `lag` is None.

Brokers are matched to spec nodes by advertised host:port equal to `NodeSpec.address`;
a broker that matches no node is named `broker-<id>` (a controller, `controller-<id>`).

Security comes from the spec: `tls` makes the connections TLS (SSL), `auth` logs them in
with SASL PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 and the secrets `username` and `password`
(SASL_PLAINTEXT, or SASL_SSL with `tls`): SaslHandshake and SaslAuthenticate right after
ApiVersions, kafka-python's SASL mechanisms computing the exchange. A broker that refuses
the login, or whose certificate is not trusted, answered: it is reported reachable with
the reason as its error (finding `auth_failed`), never as a broker down. So is a broker
our spec has no login for: a SASL listener answers ApiVersions, then closes the connection
on the next request ("it may need a login"); a TLS listener reached in plaintext answers
with a TLS alert ("it may need spec `tls`"). A broker that closes or refuses the connection
before answering ApiVersions is down.
"""
