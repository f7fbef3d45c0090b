// Initiates the replica set rs0 of docker-compose.yml once, then waits until it has a
// primary, so the services that start after this job find a set they can write to. A set
// already initiated answers rs.status() and is left as it is.
// Members are named service:port, each on a port of its own: the names resolve inside the
// compose network, and on the host too once /etc/hosts maps mongo1-3 to 127.0.0.1, where
// docker-compose.yml publishes each member's port.
try {
  rs.status();
} catch (e) {
  if (e.codeName !== "NotYetInitialized") throw e;
  rs.initiate({
    _id: "rs0",
    members: [
      { _id: 0, host: "mongo1:27017" },
      { _id: 1, host: "mongo2:27018" },
      { _id: 2, host: "mongo3:27019" },
    ],
  });
}
for (let waited = 0; !db.hello().primary; waited += 0.5) {
  if (waited >= 120) throw new Error("rs0 has no primary after 120 s");
  sleep(500);
}
