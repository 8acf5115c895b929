// Runs once, on the first start with an empty data volume (/docker-entrypoint-initdb.d):
// the services' own account, allowed to read and write the upkeep database and nothing else.
const password = process.env.UPKEEP_MONGO_PASSWORD;
if (!password) {
  throw new Error("UPKEEP_MONGO_PASSWORD is not set");
}
db.getSiblingDB("upkeep").createUser({
  user: "upkeep",
  pwd: password,
  roles: [{ role: "readWrite", db: "upkeep" }],
});
