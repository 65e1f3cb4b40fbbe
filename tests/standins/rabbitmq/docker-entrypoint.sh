#!/bin/sh
# Stand-in for the entrypoint of rabbitmq:4.2.5-alpine, on Debian's rabbitmq-server 4.0.
# Like the official one: a rabbitmq* command started as root runs as rabbitmq, and for
# rabbitmq-server the files of /var/lib/rabbitmq are first owned by rabbitmq; long host names
# set RABBITMQ_USE_LONGNAME. Besides, it makes the Erlang cookie in the data volume (HOME) when
# there is none, so that it persists and the CLI tools find it. RabbitMQ itself reads
# RABBITMQ_DEFAULT_USER, RABBITMQ_DEFAULT_PASS and RABBITMQ_DEFAULT_VHOST (first start only);
# conf.d/10-defaults.conf lets guest/guest in from other hosts. The command is exec'd, so the
# Erlang VM is PID 1 (RUNNING_UNDER_SYSTEMD, set in the image).
set -eu

case "$1" in
	rabbitmq*)
		if [ "$(id -u)" = 0 ]; then
			if [ "$1" = rabbitmq-server ]; then
				find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq:rabbitmq '{}' +
			fi
			exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$0" "$@"
		fi
		;;
esac

cookie="$HOME/.erlang.cookie"
if [ "$1" = rabbitmq-server ] && [ ! -e "$cookie" ]; then
	(umask 077 && tr -dc '[:upper:]' < /dev/urandom | head -c 20 > "$cookie")
	chmod 400 "$cookie"
fi

if [ -z "${RABBITMQ_USE_LONGNAME:-}" ] && [ "$(hostname)" != "$(hostname -s)" ]; then
	export RABBITMQ_USE_LONGNAME=true
fi

exec "$@"
