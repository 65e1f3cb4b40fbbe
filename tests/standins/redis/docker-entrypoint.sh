#!/bin/sh
# Stand-in for the entrypoint of redis:8.10.2-alpine, on Debian's redis-server.
# Like the official one: a first argument that is an option (-...) or a *.conf file gets
# "redis-server" put before it; redis-server started as root has the files of the working
# directory (/data) owned by redis and runs as redis; without a protected-mode setting in its
# arguments it gets "--protected-mode no" (other containers may connect); umask 0077 if the
# umask is the default 0022. No config file unless one is passed: bind all, foreground. The
# command is exec'd, so the server is PID 1.
set -eu

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = redis-server ]; then
	case " $* " in
		*protected-mode*) ;;
		*) set -- "$@" --protected-mode no ;;
	esac
fi

if [ "$(umask)" = 0022 ]; then
	umask 0077
fi

exec "$@"
