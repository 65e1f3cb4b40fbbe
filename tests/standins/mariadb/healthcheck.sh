#!/bin/bash
# Stand-in for healthcheck.sh of mariadb:11.8.6: runs each test named, in order, and fails on
# the first that fails. Tests: --connect (the server accepts TCP connections: not the temporary
# server of the entrypoint, which runs with --skip-networking), --innodb_initialized,
# --innodb_buffer_pool_loaded. It logs in with /var/lib/mysql/.my-healthcheck.cnf (written by
# the entrypoint), or with the file given by --defaults-extra-file=FILE; --su-mysql is accepted
# and ignored (root can read that file).
set -eu

extra_file=/var/lib/mysql/.my-healthcheck.cnf
mariadb_() {
	local defaults=()
	if [ -f "$extra_file" ]; then defaults=(--defaults-extra-file="$extra_file"); fi
	mariadb "${defaults[@]}" --skip-ssl --skip-ssl-verify-server-cert --batch --skip-column-names "$@"
}
query() { mariadb_ --protocol=socket -e "$1"; }

for arg; do
	case "$arg" in
		--defaults-extra-file=*) extra_file="${arg#*=}" ;;
		--su-mysql) ;;
		--connect)
			# Any answer from the TCP port counts, "access denied" too, as in the official script.
			out="$(mariadb_ --protocol=tcp -h 127.0.0.1 -e 'SELECT @@skip_networking' 2>&1 || true)"
			case "$out" in
				0 | *"(28000)"*) ;;
				*) echo "connect: $out" >&2; exit 1 ;;
			esac
			;;
		--innodb_initialized)
			[ "$(query "SELECT 1 FROM information_schema.ENGINES WHERE engine = 'innodb' AND support IN ('YES', 'DEFAULT', 'ENABLED')")" = 1 ]
			;;
		--innodb_buffer_pool_loaded)
			query "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'Innodb_buffer_pool_load_status'" | grep -q 'load completed'
			;;
		*) echo "healthcheck.sh: unknown option $arg" >&2; exit 2 ;;
	esac
done
