#!/bin/bash
# Stand-in for the entrypoint of mariadb:11.8.6, on Debian's MariaDB 11.8.
# Honours, on an empty /var/lib/mysql only: exactly one of MARIADB_ROOT_PASSWORD,
# MARIADB_ALLOW_EMPTY_ROOT_PASSWORD and MARIADB_RANDOM_ROOT_PASSWORD (printed as "GENERATED ROOT
# PASSWORD: ..."), MARIADB_ROOT_HOST (%), MARIADB_DATABASE, MARIADB_USER + MARIADB_PASSWORD (all
# privileges on that database), each also as MYSQL_*, and /docker-entrypoint-initdb.d/*.sql
# and *.sh, against a temporary server with --skip-networking (so healthcheck.sh --connect
# fails until the real one runs). It creates the healthcheck@localhost users and writes their
# credentials to /var/lib/mysql/.my-healthcheck.cnf, as the official image does.
# On a later start, MARIADB_AUTO_UPGRADE (any value but 0) runs mariadb-upgrade when the data
# is from an older MariaDB, and creates the healthcheck users if they are missing.
# Started as root, it owns the data directory to mysql and re-runs itself as mysql; then it
# execs the command, so the server is PID 1.
set -eu

if [ "${1:0:1}" = '-' ]; then
	set -- mariadbd "$@"
fi
if [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then
	exec "$@"
fi

DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock
if [ "$(id -u)" = 0 ]; then
	find "$DATADIR" /run/mysqld \! -user mysql -exec chown mysql:mysql '{}' +
	exec setpriv --reuid=mysql --regid=mysql --init-groups "$0" "$@"
fi

note() { printf '%s [Note] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*"; }
error() { printf '%s [ERROR] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*" >&2; exit 1; }
# A string for a quoted SQL literal: backslashes and single quotes escaped.
literal() { local s="${1//\\/\\\\}"; printf '%s' "${s//\'/\\\'}"; }
random_password() { tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 32 || true; }

root_password="${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}"
allow_empty="${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-${MYSQL_ALLOW_EMPTY_PASSWORD:-}}"
random_root="${MARIADB_RANDOM_ROOT_PASSWORD:-${MYSQL_RANDOM_ROOT_PASSWORD:-}}"
root_host="${MARIADB_ROOT_HOST:-${MYSQL_ROOT_HOST:-%}}"
database="${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}"
user="${MARIADB_USER:-${MYSQL_USER:-}}"
password="${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}"
auto_upgrade="${MARIADB_AUTO_UPGRADE:-${MYSQL_AUTO_UPGRADE:-}}"

# Runs SQL as root over the socket (MYSQL_PWD: root's password, empty for a new data directory).
sql() { mariadb --protocol=socket --socket="$SOCKET" -uroot --skip-ssl "$@"; }
start_temp_server() {
	"$@" --skip-networking --socket="$SOCKET" --skip-log-bin --skip-slave-start \
		--loose-innodb_buffer_pool_load_at_startup=0 --loose-innodb_buffer_pool_dump_at_shutdown=0 &
	temp_pid=$!
	for _ in $(seq 300); do
		if sql -e 'SELECT 1' > /dev/null 2>&1; then
			return
		fi
		kill -0 "$temp_pid" 2> /dev/null || error "Unable to start the temporary server."
		sleep 0.1
	done
	error "The temporary server did not accept connections in 30 s."
}
stop_temp_server() { kill "$temp_pid"; wait "$temp_pid"; }
# SQL that creates the healthcheck users; writes their credentials for healthcheck.sh.
healthcheck_users() {
	local pw host
	pw="$(random_password)"
	for host in 127.0.0.1 ::1 localhost; do
		echo "CREATE USER IF NOT EXISTS healthcheck@'$host' IDENTIFIED BY '$pw';"
		echo "SET PASSWORD FOR healthcheck@'$host' = PASSWORD('$pw');"
		echo "GRANT USAGE ON *.* TO healthcheck@'$host';"
	done
	(umask 077 && printf '[mariadb-client]\nport=3306\nsocket=%s\nuser=healthcheck\npassword=%s\n' \
		"$SOCKET" "$pw" > "$DATADIR/.my-healthcheck.cnf")
}

if [ ! -d "$DATADIR/mysql" ]; then
	modes=0
	for mode in "$root_password" "$allow_empty" "$random_root"; do
		if [ -n "$mode" ]; then modes=$((modes + 1)); fi
	done
	if [ "$modes" != 1 ]; then
		error "Database is uninitialized: specify exactly one of MARIADB_ROOT_PASSWORD," \
			"MARIADB_ALLOW_EMPTY_ROOT_PASSWORD and MARIADB_RANDOM_ROOT_PASSWORD."
	fi
	if [ -n "$random_root" ]; then
		root_password="$(random_password)"
		note "GENERATED ROOT PASSWORD: $root_password"
	fi

	note "Initializing database files"
	mariadb-install-db --datadir="$DATADIR" --rpm --auth-root-authentication-method=normal \
		--cross-bootstrap --skip-test-db --skip-log-bin --expire-logs-days=0 \
		--loose-innodb_buffer_pool_load_at_startup=0 --loose-innodb_buffer_pool_dump_at_shutdown=0 \
		> /dev/null
	start_temp_server "$@"
	rootpw="$(literal "$root_password")"
	{
		echo "SET @@SESSION.SQL_LOG_BIN=0;"
		echo "SET @@SESSION.SQL_MODE=REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');"
		echo "DROP USER IF EXISTS root@'127.0.0.1', root@'::1';"
		echo "SET PASSWORD FOR root@localhost = PASSWORD('$rootpw');"
		if [ "$root_host" != localhost ]; then
			echo "CREATE USER root@'$root_host' IDENTIFIED BY '$rootpw';"
			echo "GRANT ALL ON *.* TO root@'$root_host' WITH GRANT OPTION;"
			echo "GRANT PROXY ON ''@'%' TO root@'$root_host' WITH GRANT OPTION;"
		fi
		healthcheck_users
		if [ -n "$database" ]; then
			note "Creating database $database" >&2
			echo "CREATE DATABASE IF NOT EXISTS \`${database//\`/\`\`}\`;"
		fi
		if [ -n "$user" ] && [ -n "$password" ]; then
			note "Creating user $user" >&2
			echo "CREATE USER '$(literal "$user")'@'%' IDENTIFIED BY '$(literal "$password")';"
			if [ -n "$database" ]; then
				# "_" is a wildcard in a grant's database name.
				grant_db="${database//\`/\`\`}"
				echo "GRANT ALL ON \`${grant_db//_/\\_}\`.* TO '$(literal "$user")'@'%';"
			fi
		fi
	} | sql --binary-mode
	export MYSQL_PWD="$root_password"
	use_database=()
	if [ -n "$database" ]; then use_database=(--database="$database"); fi
	shopt -s nullglob
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
			*.sql) note "running $f"; sql "${use_database[@]}" < "$f" ;;
			*.sh)
				if [ -x "$f" ]; then
					note "running $f"
					"$f"
				else
					note "sourcing $f"
					# shellcheck source=/dev/null
					. "$f"
				fi
				;;
			*) note "ignoring $f" ;;
		esac
	done
	unset MYSQL_PWD
	stop_temp_server
	note "MariaDB init process done. Ready for start up."
elif [ -n "$auto_upgrade" ] && [ "$auto_upgrade" != 0 ]; then
	server_version="$("$1" --version | sed -E 's/.* Ver ([0-9]+\.[0-9]+).*/\1/')"
	data_version="$(cut -d. -f1,2 "$DATADIR/mariadb_upgrade_info" 2> /dev/null || true)"
	if [ "$data_version" != "$server_version" ] || [ ! -f "$DATADIR/.my-healthcheck.cnf" ]; then
		note "Upgrading data from MariaDB ${data_version:-unknown} to $server_version"
		start_temp_server "$@" --skip-grant-tables
		mariadb-upgrade --upgrade-system-tables --protocol=socket --socket="$SOCKET" --skip-ssl
		if [ ! -f "$DATADIR/.my-healthcheck.cnf" ]; then
			{ echo "FLUSH PRIVILEGES;"; healthcheck_users; } | sql --binary-mode
		fi
		stop_temp_server
	fi
fi

# The server's environment keeps no password.
unset MARIADB_ROOT_PASSWORD MYSQL_ROOT_PASSWORD MARIADB_PASSWORD MYSQL_PASSWORD
exec "$@"
