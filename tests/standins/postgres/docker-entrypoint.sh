#!/bin/bash
# Stand-in for the entrypoint of postgres:18.6-trixie, on Debian's PostgreSQL 17.
# Honours, on an empty $PGDATA only (default /var/lib/postgresql/18/docker):
#   POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER
#   (postgres), POSTGRES_DB (the user), POSTGRES_HOST_AUTH_METHOD (scram-sha-256, for every
#   host connection from another address), POSTGRES_INITDB_ARGS, and
#   /docker-entrypoint-initdb.d/*.sql and *.sh (run or sourced), against a temporary server that
#   listens on the Unix socket only, so `pg_isready -h 127.0.0.1` fails until the real one runs.
# Started as root, it owns $PGDATA to postgres and re-runs itself as postgres; then it execs the
# command, so the server is PID 1.
set -eu

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
	exec "$@"
fi

mkdir -p "$PGDATA"
if [ "$(id -u)" = 0 ]; then
	find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
	HOME=/var/lib/postgresql exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
chmod 700 "$PGDATA"

if [ -s "$PGDATA/PG_VERSION" ]; then
	echo "PostgreSQL Database directory appears to contain a database; Skipping initialization"
	exec "$@"
fi

POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
POSTGRES_PASSWORD="${POSTGRES_PASSWORD:-}"
POSTGRES_HOST_AUTH_METHOD="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
	cat >&2 <<-'EOE'
		Error: Database is uninitialized and superuser password is not specified.
		       You must specify POSTGRES_PASSWORD to a non-empty value for the
		       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

		       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
		       connections without a password. This is *not* recommended.
	EOE
	exit 1
fi

# Local (socket and loopback) connections: initdb's default, trust. Other hosts: the method.
pwfile="$(mktemp)"
printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as in the official image
initdb --username="$POSTGRES_USER" ${POSTGRES_PASSWORD:+--pwfile="$pwfile"} ${POSTGRES_INITDB_ARGS:-}
rm -f "$pwfile"
printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"

pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
"${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
	SELECT format('CREATE DATABASE %I', :'db')
	WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
EOSQL
shopt -s nullglob
for f in /docker-entrypoint-initdb.d/*; do
	case "$f" in
		*.sql) echo "$0: running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
		*.sh)
			if [ -x "$f" ]; then
				echo "$0: running $f"
				"$f"
			else
				echo "$0: sourcing $f"
				# shellcheck source=/dev/null
				. "$f"
			fi
			;;
		*) echo "$0: ignoring $f" ;;
	esac
done
pg_ctl -D "$PGDATA" -m fast -w stop

echo "PostgreSQL init process complete; ready for start up."
exec "$@"
