# Shared by the benchmarks that run once per database. `for_each_backend NAME FN` calls FN with
# the backend name and the onramp flags selecting it: SQLite in a data dir, or a fresh PostgreSQL
# schema on the local server (dropped afterwards).
for_each_backend() {
  local label=$1 run=$2 schema
  "$run" sqlite
  schema="onramp_${label}_$(date +%s)"
  psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE SCHEMA $schema"
  "$run" postgres --database-url "postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D$schema" || {
    psql -q -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1; return 1; }
  psql -q -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1
}
