# Sourced by scripts/test: makes sure the tests have a PostgreSQL to talk to.
#
# The tests use $MILLWRIGHT_TEST_POSTGRES, by default the local server on 127.0.0.1:5432
# (database test, trust authentication), as on the project's machines. When nothing answers
# there, ensure_postgres installs Debian's postgresql package if needed, starts a throwaway
# cluster of its own on a free loopback port (trust authentication, a database named test),
# points MILLWRIGHT_TEST_POSTGRES at it, and stop_postgres removes it when the tests end.

pg_default_url="postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
pg_tmp=""
pg_bin=""

# pg_answers URL: whether a PostgreSQL accepts connections at URL's host and port.
pg_answers() {
	local hostport host port
	hostport=${1#*://}
	hostport=${hostport#*@}
	hostport=${hostport%%/*}
	host=${hostport%:*}
	port=${hostport##*:}
	[ "$port" = "$hostport" ] && port=5432
	if command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -h "$host" -p "$port" -t 3
	else
		(exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
	fi
}

ensure_postgres() {
	local url=${MILLWRIGHT_TEST_POSTGRES:-$pg_default_url}
	if pg_answers "$url"; then
		export MILLWRIGHT_TEST_POSTGRES=$url
		return
	fi
	echo "no PostgreSQL answers at ${url%%\?*}: starting a throwaway cluster"
	pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	if [ -z "$pg_bin" ]; then
		local sudo=""
		[ "$(id -u)" = 0 ] || sudo=sudo
		echo "installing: postgresql"
		$sudo apt-get update -qq
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
		pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	fi
	pg_tmp=$(mktemp -d /tmp/millwright-pg.XXXXXX)
	local port run=()
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	# PostgreSQL refuses to run as root: the cluster belongs to the postgres user then.
	if [ "$(id -u)" = 0 ]; then
		id postgres >/dev/null 2>&1 || useradd --system --home-dir "$pg_tmp" postgres
		chown postgres "$pg_tmp"
		run=(runuser -u postgres --)
	fi
	"${run[@]}" "$pg_bin/initdb" -D "$pg_tmp/data" -A trust -U postgres >"$pg_tmp/initdb.log" 2>&1 ||
		{ cat "$pg_tmp/initdb.log" >&2; return 1; }
	"${run[@]}" "$pg_bin/pg_ctl" -D "$pg_tmp/data" -l "$pg_tmp/server.log" -w \
		-o "-p $port -k $pg_tmp -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null ||
		{ cat "$pg_tmp/server.log" >&2; return 1; }
	"${run[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres test
	export MILLWRIGHT_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/test?sslmode=disable"
	echo "throwaway PostgreSQL on 127.0.0.1:$port"
}

stop_postgres() {
	[ -n "$pg_tmp" ] || return 0
	local run=()
	[ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
	"${run[@]}" "$pg_bin/pg_ctl" -D "$pg_tmp/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$pg_tmp"
	pg_tmp=""
}
