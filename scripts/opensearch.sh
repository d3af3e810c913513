#!/usr/bin/env bash
# A single-node OpenSearch 2.x on 127.0.0.1 for the tests, from Maven Central's
# integ-test distribution (org.opensearch.distribution.integ-test-zip:opensearch,
# fetched with `mvn`: no security plugin, only the transport-netty4 module).
#
#   scripts/opensearch.sh install   # fetch + unpack once into $INGEST_CACHE/opensearch-<version>
#   scripts/opensearch.sh start     # install if needed, start, wait for yellow, print the URL
#   scripts/opensearch.sh status    # print the URL and _cluster/health (exit 3 if not running)
#   scripts/opensearch.sh stop      # stop it by pid and wait
#   scripts/opensearch.sh url       # print the URL of the running node
#
# Settings (environment):
#   INGEST_CACHE              cache root, outside the clone (default ~/.cache/ingest)
#   OPENSEARCH_VERSION        default 2.19.6 (2.x runs on the machine's Java 17)
#   OPENSEARCH_PORT           HTTP port (default 9200); 0 or "auto" picks a free one
#   OPENSEARCH_HEAP           JVM heap, -Xms = -Xmx (default 512m)
#   OPENSEARCH_RUN_DIR        config, data, logs, pid (default $INGEST_CACHE/run/opensearch);
#                             give each concurrent node its own
#   OPENSEARCH_KEEP_DATA=1    keep the data dir across starts (default: wiped at start)
#   OPENSEARCH_START_TIMEOUT  seconds to wait for yellow (default 120)
#   OPENSEARCH_JAVA_HOME      a Java 11..23 home; default: the `java` on PATH
#   OPENSEARCH_MODULES        modules added to the bare integ-test node from their jars on
#                             Maven Central (default: "analysis-common lang-painless
#                             mapper-extras reindex"; "" for none): analysis-common has the
#                             usual analyzers and filters (lowercase, asciifolding, ...),
#                             reindex _delete_by_query/_update_by_query/_reindex,
#                             mapper-extras scaled_float, rank_feature, search_as_you_type.
#                             A module once added stays in that install.
# After `start`, $OPENSEARCH_RUN_DIR/env holds OPENSEARCH_URL=http://127.0.0.1:<port>.
set -euo pipefail

INGEST_CACHE="${INGEST_CACHE:-$HOME/.cache/ingest}"
OPENSEARCH_VERSION="${OPENSEARCH_VERSION:-2.19.6}"
OS_HOME="$INGEST_CACHE/opensearch-$OPENSEARCH_VERSION"
RUN_DIR="${OPENSEARCH_RUN_DIR:-$INGEST_CACHE/run/opensearch}"
PID_FILE="$RUN_DIR/opensearch.pid"
HEAP="${OPENSEARCH_HEAP:-512m}"
START_TIMEOUT="${OPENSEARCH_START_TIMEOUT:-120}"
ARTIFACT="org.opensearch.distribution.integ-test-zip:opensearch:$OPENSEARCH_VERSION:zip"
MAIN_CLASS="org.opensearch.bootstrap.OpenSearch"

log() { echo "opensearch: $*" >&2; }
die() { echo "opensearch: error: $*" >&2; exit 1; }

# port_busy, free_port
source "$(dirname "${BASH_SOURCE[0]}")/lib/ports.sh"

# The pid in the pid file, if that process is alive and is an OpenSearch node.
running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$MAIN_CLASS" || return 1
  echo "$pid"
}

current_url() { [ -f "$RUN_DIR/env" ] || return 0; sed -n 's/^OPENSEARCH_URL=//p' "$RUN_DIR/env"; }

java_home() {
  local jh java major
  if [ -n "${OPENSEARCH_JAVA_HOME:-}" ]; then
    jh="$OPENSEARCH_JAVA_HOME"
  else
    java="$(command -v java || true)"
    [ -n "$java" ] || die "no java on PATH: install OpenJDK 17 (apt-get install openjdk-17-jre-headless) or set OPENSEARCH_JAVA_HOME"
    jh="$(dirname "$(dirname "$(readlink -f "$java")")")"
  fi
  [ -x "$jh/bin/java" ] || die "no $jh/bin/java: set OPENSEARCH_JAVA_HOME to a Java 11..23 home"
  major="$("$jh/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  major="${major#1.}"
  if [ -z "$major" ] || [ "$major" -lt 11 ] || [ "$major" -gt 23 ]; then
    die "OpenSearch $OPENSEARCH_VERSION needs Java 11..23 (2.x uses the Security Manager, gone in 24); $jh is Java ${major:-?}: set OPENSEARCH_JAVA_HOME (e.g. to the OpenJDK 17 home)"
  fi
  echo "$jh"
}

cmd_install() {
  mkdir -p "$INGEST_CACHE"
  # One installer at a time per cache (parallel CI jobs, two clones); in a subshell
  # so that the lock's fd is not inherited by the server.
  (
    flock 9
    install_locked
  ) 9>"$INGEST_CACHE/.opensearch.lock"
}

install_locked() {
  if [ -f "$OS_HOME/.installed" ]; then
    install_modules
    log "OpenSearch $OPENSEARCH_VERSION in $OS_HOME"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found: install Maven (apt-get install maven)"
  command -v unzip >/dev/null 2>&1 || die "unzip not found: apt-get install unzip"
  local t0=$SECONDS
  tmp="$(mktemp -d "$INGEST_CACHE/.opensearch-install.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  log "fetching $ARTIFACT with mvn"
  if ! (cd "$tmp" && mvn -B -q dependency:copy -Dartifact="$ARTIFACT" -DoutputDirectory="$tmp/dl") >"$tmp/mvn.log" 2>&1; then
    cat "$tmp/mvn.log" >&2
    die "mvn could not fetch $ARTIFACT; versions served for 2.x included 2.19.6, 2.19.1, 2.19.0, 2.18.0, 2.17.0: set OPENSEARCH_VERSION"
  fi
  log "unpacking into $OS_HOME"
  unzip -q "$tmp/dl/opensearch-$OPENSEARCH_VERSION.zip" -d "$tmp/unpacked"
  [ -x "$tmp/unpacked/opensearch-$OPENSEARCH_VERSION/bin/opensearch" ] || die "unexpected zip layout in $ARTIFACT"
  rm -rf "$OS_HOME"
  mv "$tmp/unpacked/opensearch-$OPENSEARCH_VERSION" "$OS_HOME"
  touch "$OS_HOME/.installed"
  rm -rf "$tmp"
  log "installed OpenSearch $OPENSEARCH_VERSION in $((SECONDS - t0)) s"
  install_modules
}

MODULES="${OPENSEARCH_MODULES-analysis-common lang-painless mapper-extras reindex}"

# Sets artifact, class and extends (the plugin it extends) for a module name:
# Maven Central serves these modules' jars, not their zips.
module_info() {
  extends=""
  case "$1" in
    lang-painless) artifact=org.opensearch.plugin:lang-painless class=org.opensearch.painless.PainlessPlugin ;;
    analysis-common) artifact=org.opensearch.plugin:analysis-common class=org.opensearch.analysis.common.CommonAnalysisPlugin extends=lang-painless ;;
    mapper-extras) artifact=org.opensearch.plugin:mapper-extras-client class=org.opensearch.index.mapper.MapperExtrasPlugin ;;
    reindex) artifact=org.opensearch.plugin:reindex-client class=org.opensearch.index.reindex.ReindexPlugin ;;
    *) die "unknown module '$1' in OPENSEARCH_MODULES (known: analysis-common lang-painless mapper-extras reindex)" ;;
  esac
}

# The grants of the modules' own plugin-security.policy files.
module_policy() {
  case "$1" in
    lang-painless)
      cat <<'POLICY'
grant {
  // needed to generate runtime classes
  permission java.lang.RuntimePermission "createClassLoader";
  // needed to find the classloader to load allowlisted classes from
  permission java.lang.RuntimePermission "getClassLoader";
};
POLICY
      ;;
    reindex)
      cat <<'POLICY'
grant {
  // reindex from remote opens socket connections using the rest client
  permission java.net.SocketPermission "*", "connect";
};
grant codeBase "${codebase.opensearch-rest-client}" {
  permission java.net.NetPermission "getProxySelector";
};
grant codeBase "${codebase.httpasyncclient}" {
  permission java.net.NetPermission "getProxySelector";
};
POLICY
      ;;
  esac
}

# A module dir from the module's jar and its runtime dependencies, less the jars the
# server has in lib/ (a second copy fails OpenSearch's jar-hell check at startup).
install_module() {
  local name="$1" dir="$OS_HOME/modules/$1" artifact class extends
  [ -f "$dir/.ingest-module" ] && return 0
  module_info "$name"
  if [ -n "$extends" ]; then
    install_module "$extends"
    module_info "$name"
  fi
  local work="$tmp/module-$name"
  mkdir -p "$work/jars"
  cat >"$work/pom.xml" <<EOF
<project><modelVersion>4.0.0</modelVersion>
<groupId>ingest.local</groupId><artifactId>opensearch-module-$name</artifactId><version>0</version><packaging>pom</packaging>
<dependencies><dependency><groupId>${artifact%%:*}</groupId><artifactId>${artifact#*:}</artifactId><version>$OPENSEARCH_VERSION</version>
<exclusions><exclusion><groupId>org.opensearch</groupId><artifactId>opensearch</artifactId></exclusion></exclusions>
</dependency></dependencies></project>
EOF
  log "fetching module $name ($artifact:$OPENSEARCH_VERSION) with mvn"
  if ! (cd "$work" && mvn -B -q dependency:copy-dependencies -DoutputDirectory="$work/jars" -DincludeScope=runtime) >"$work/mvn.log" 2>&1; then
    cat "$work/mvn.log" >&2
    die "mvn could not fetch $artifact:$OPENSEARCH_VERSION; set OPENSEARCH_MODULES to leave $name out"
  fi
  local j base
  for j in "$work/jars"/*.jar; do
    base="$(basename "$j" | sed -E 's/-[0-9][^-]*(-[0-9A-Za-z.]+)*\.jar$//')"
    if compgen -G "$OS_HOME/lib/$base-[0-9]*.jar" >/dev/null; then rm -f "$j"; fi
  done
  # The extended plugin's jars are visible through its class loader already.
  if [ -n "$extends" ]; then
    for j in "$OS_HOME/modules/$extends"/*.jar; do rm -f "$work/jars/$(basename "$j")"; done
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  mv "$work/jars"/*.jar "$dir/"
  cat >"$dir/plugin-descriptor.properties" <<EOF
# written by scripts/opensearch.sh from the module's jars on Maven Central
description=$name module (assembled for the ingest tests)
version=$OPENSEARCH_VERSION
name=$name
classname=$class
java.version=11
opensearch.version=$OPENSEARCH_VERSION
custom.foldername=
extended.plugins=$extends
has.native.controller=false
EOF
  module_policy "$name" >"$dir/plugin-security.policy"
  [ -s "$dir/plugin-security.policy" ] || rm -f "$dir/plugin-security.policy"
  touch "$dir/.ingest-module"
}

install_modules() {
  local m missing=0
  local artifact class extends
  for m in $MODULES; do
    module_info "$m"
    [ -f "$OS_HOME/modules/$m/.ingest-module" ] || missing=1
  done
  [ "$missing" = 1 ] || return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found: install Maven (apt-get install maven)"
  tmp="$(mktemp -d "$INGEST_CACHE/.opensearch-modules.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  local t0=$SECONDS
  for m in $MODULES; do install_module "$m"; done
  rm -rf "$tmp"
  log "modules added ($MODULES) in $((SECONDS - t0)) s"
}

write_config() {
  local port="$1" conf="$RUN_DIR/config"
  rm -rf "$conf"
  mkdir -p "$conf" "$RUN_DIR/data" "$RUN_DIR/logs" "$RUN_DIR/tmp"
  cp -R "$OS_HOME/config/." "$conf/"
  # Heap from OPENSEARCH_HEAP; GC log, heap dumps and crash files into the run dir,
  # not the shared install (the launcher runs with cwd = install dir).
  sed -i \
    -e "s|^-Xms.*|-Xms$HEAP|" -e "s|^-Xmx.*|-Xmx$HEAP|" \
    -e "s|file=logs/gc.log:\(.*\):filecount=32,filesize=64m|file=$RUN_DIR/logs/gc.log:\1:filecount=2,filesize=16m|" \
    -e "s|HeapDumpPath=data|HeapDumpPath=$RUN_DIR/data|" \
    -e "s|ErrorFile=logs/|ErrorFile=$RUN_DIR/logs/|" \
    "$conf/jvm.options"
  cat >"$conf/opensearch.yml" <<EOF
# written by scripts/opensearch.sh; regenerated at every start
cluster.name: ingest-test
node.name: ingest-test-node
path.data: $RUN_DIR/data
path.logs: $RUN_DIR/logs
network.host: 127.0.0.1
http.port: $port
transport.port: 9300-9400
discovery.type: single-node
bootstrap.memory_lock: false
cluster.routing.allocation.disk.threshold_enabled: false
action.auto_create_index: true
EOF
  if [ -d "$OS_HOME/plugins/opensearch-security" ]; then
    echo "plugins.security.disabled: true" >>"$conf/opensearch.yml"
  fi
}

cmd_start() {
  local pid url
  if pid="$(running_pid)"; then
    url="$(current_url)"
    log "already running (pid $pid) at $url"
    echo "$url"
    return 0
  fi
  rm -f "$PID_FILE"
  cmd_install
  local jh port
  jh="$(java_home)"
  port="${OPENSEARCH_PORT:-9200}"
  if [ "$port" = 0 ] || [ "$port" = auto ]; then port="$(free_port OPENSEARCH_PORT)"; fi
  if port_busy "$port"; then
    die "port $port on 127.0.0.1 is in use: stop what holds it, or set OPENSEARCH_PORT (0 picks a free port)"
  fi
  mkdir -p "$RUN_DIR"
  if [ "${OPENSEARCH_KEEP_DATA:-0}" != 1 ]; then rm -rf "$RUN_DIR/data"; fi
  write_config "$port"
  url="http://127.0.0.1:$port"
  echo "OPENSEARCH_URL=$url" >"$RUN_DIR/env"

  # OpenSearch refuses to run as root. As root (CI here runs as root), start it in
  # a new user namespace with no uid mapping: it sees itself as nobody, while the
  # kernel still checks its file access as root's, so the root-owned cache works.
  local as_non_root=()
  if [ "$(id -u)" = 0 ]; then
    unshare --user true 2>/dev/null \
      || die "running as root, and 'unshare --user' is not permitted here: OpenSearch refuses root; run this script as a non-root user"
    as_non_root=(unshare --user)
  fi

  local t0=$SECONDS
  log "starting OpenSearch $OPENSEARCH_VERSION on $url (heap $HEAP, run dir $RUN_DIR)"
  (
    unset JAVA_HOME JAVA_TOOL_OPTIONS JAVA_OPTS
    export OPENSEARCH_JAVA_HOME="$jh" OPENSEARCH_PATH_CONF="$RUN_DIR/config" OPENSEARCH_TMPDIR="$RUN_DIR/tmp"
    # setsid, unshare and the launcher all exec, so $! is the JVM's pid.
    exec setsid "${as_non_root[@]}" "$OS_HOME/bin/opensearch" >"$RUN_DIR/logs/stdout.log" 2>&1 </dev/null
  ) &
  pid=$!
  echo "$pid" >"$PID_FILE"

  local deadline=$((SECONDS + START_TIMEOUT))
  until curl -fsS -m 5 -o /dev/null "$url/_cluster/health?wait_for_status=yellow&timeout=2s" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      tail -n 40 "$RUN_DIR/logs/stdout.log" >&2 || true
      die "OpenSearch exited during startup; logs in $RUN_DIR/logs"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 40 "$RUN_DIR/logs/stdout.log" >&2 || true
      cmd_stop || true
      die "OpenSearch not yellow after ${START_TIMEOUT}s (OPENSEARCH_START_TIMEOUT); logs in $RUN_DIR/logs"
    fi
    sleep 1
  done
  log "yellow after $((SECONDS - t0)) s (pid $pid)"
  echo "$url"
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still alive after 60 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid url
  if ! pid="$(running_pid)"; then
    echo "opensearch: not running"
    return 3
  fi
  url="$(current_url)"
  echo "opensearch: running, pid $pid, $url"
  curl -fsS -m 10 "$url/_cluster/health?pretty" || { echo "opensearch: pid $pid alive but $url does not answer"; return 1; }
}

cmd_url() {
  running_pid >/dev/null || die "not running: scripts/opensearch.sh start"
  current_url
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) cmd_url ;;
  *) echo "usage: $0 {install|start|stop|status|url}  (see the header of this script for settings)" >&2; exit 2 ;;
esac
