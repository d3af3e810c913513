#!/usr/bin/env bash
# A single-node Elasticsearch on 127.0.0.1 for the tests, from Maven Central's
# integ-test distribution (org.elasticsearch.distribution.integ-test-zip:elasticsearch,
# fetched with `mvn`): no bundled JDK, and only the transport-netty4, x-pack-core,
# x-pack-security and apm modules (no analysis-common, ingest-common, painless, ml...),
# plus a small ingest-test-analysis module built here for the .security index (see
# install_shim). In this distribution `GET /` answers 405: use /_cluster/health.
#
#   scripts/elasticsearch.sh install   # fetch + unpack once into $INGEST_CACHE/elasticsearch-<version>
#   scripts/elasticsearch.sh start     # install if needed, start, wait for yellow, print the URL
#   scripts/elasticsearch.sh status    # print the URL and _cluster/health (exit 3 if not running)
#   scripts/elasticsearch.sh stop      # stop it by pid and wait for its JVMs to end
#   scripts/elasticsearch.sh url       # print the URL of the running node
#
# Settings (environment):
#   INGEST_CACHE        cache root, outside the clone (default ~/.cache/ingest)
#   ES_VERSION          default 9.1.0 (also known to resolve: 8.19.0, 8.15.0)
#   ES_PORT             HTTP port (default 9200); 0 or "auto" picks a free one
#   ES_HEAP             JVM heap, -Xms = -Xmx (default 512m)
#   ES_RUN_DIR          config, data, logs, certs, pid, env file
#                       (default $INGEST_CACHE/run/elasticsearch-<version>);
#                       give each concurrent node its own
#   ES_KEEP_DATA=1      keep the data dir across starts (default: wiped at start)
#   ES_START_TIMEOUT    seconds to wait for yellow (default 180)
#   ES_JAVA_HOME        a Java home (9.x needs Java 21+, 8.18+ Java 17+, 8.0..8.17 Java
#                       17..23); default: the newest suitable one under /usr/lib/jvm or
#                       the `java` on PATH (here: Temurin 25 for 9.1.0 and 8.19.0)
#   ES_JAVA_OPTS        extra JVM options for the node, read by Elasticsearch itself
#                       (the node runs C1-only for a fast start: -XX:TieredStopAtLevel=4
#                       here brings C2 back)
#   ES_SECURITY=1       x-pack security on: HTTPS with a certificate for 127.0.0.1 and
#                       localhost from a test CA made with openssl, the `elastic`
#                       superuser with password $ES_PASSWORD, API keys on. Default 0:
#                       security off, plain http, no credentials.
#   ES_PASSWORD         the elastic user's password (default ingest-test-password), set
#                       as bootstrap.password in the node's keystore
#
# Files in $ES_RUN_DIR: env (below), elasticsearch.pid (the launcher JVM, leader of a
# process group that holds the server JVM), config/ (regenerated at every start), data/,
# logs/ (stdout.log, ingest-test.log, gc.log), tmp/ and, with ES_SECURITY=1, certs/
# (ca.crt, ca.key, node.crt, node.key in PEM, and the keystore, kept across starts).
# After `start`, $ES_RUN_DIR/env holds ES_URL=http(s)://127.0.0.1:<port> and, with
# ES_SECURITY=1, ES_USERNAME=elastic, ES_PASSWORD=... and ES_CA=<path of ca.crt>.
# As root, the node runs in a user namespace where it is nobody (ES refuses root).
set -euo pipefail

INGEST_CACHE="${INGEST_CACHE:-$HOME/.cache/ingest}"
ES_VERSION="${ES_VERSION:-9.1.0}"
ES_INSTALL="$INGEST_CACHE/elasticsearch-$ES_VERSION"
RUN_DIR="${ES_RUN_DIR:-$INGEST_CACHE/run/elasticsearch-$ES_VERSION}"
PID_FILE="$RUN_DIR/elasticsearch.pid"
HEAP="${ES_HEAP:-512m}"
START_TIMEOUT="${ES_START_TIMEOUT:-180}"
SECURITY="${ES_SECURITY:-0}"
PASSWORD="${ES_PASSWORD:-ingest-test-password}"
ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip"
# bin/elasticsearch execs this CLI launcher, which runs the server JVM
# (org.elasticsearch.bootstrap.Elasticsearch) as its child.
LAUNCHER_CLASS="org.elasticsearch.launcher.CliToolLauncher"

log() { echo "elasticsearch: $*" >&2; }
die() { echo "elasticsearch: error: $*" >&2; exit 1; }

case "$SECURITY" in 0 | 1) ;; *) die "ES_SECURITY must be 0 or 1, not '$SECURITY'" ;; esac
# Java: 9.x needs 21+; 8.x 17+, and before 8.18 (Security Manager, gone in Java 24) at
# most 23. From 8.18 on, ES runs on entitlements instead, on any Java from 17.
MAX_JAVA=999
case "$ES_VERSION" in
  [0-7].*) die "ES_VERSION $ES_VERSION: only 8.x and 9.x are supported" ;;
  8.*)
    MIN_JAVA=17
    minor="${ES_VERSION#8.}"
    minor="${minor%%.*}"
    case "$minor" in *[!0-9]* | "") die "ES_VERSION $ES_VERSION: not a version" ;; esac
    if [ "$minor" -lt 18 ]; then MAX_JAVA=23; fi
    ;;
  *) MIN_JAVA=21 ;;
esac
java_range() { if [ "$MAX_JAVA" = 999 ]; then echo "$MIN_JAVA+"; else echo "$MIN_JAVA..$MAX_JAVA"; fi; }

now_ms() { local t="${EPOCHREALTIME:-$(date +%s.%N)}"; t="${t%"${t#*.???}"}"; echo $((10#${t/./})); }

# port_busy, free_port
source "$(dirname "${BASH_SOURCE[0]}")/lib/ports.sh"

# The launcher's pid in the pid file, if that process is alive and is this run dir's
# Elasticsearch launcher.
running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then return 1; fi
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$LAUNCHER_CLASS" || return 1
  echo "$pid"
}

env_value() { [ -f "$RUN_DIR/env" ] || return 0; sed -n "s/^$1=//p" "$RUN_DIR/env"; }
current_url() { env_value ES_URL; }

# curl against the node described by $RUN_DIR/env (credentials and CA when secured).
node_curl() {
  local user ca
  user="$(env_value ES_USERNAME)"
  ca="$(env_value ES_CA)"
  local args=()
  [ -n "$ca" ] && args+=(--cacert "$ca")
  [ -n "$user" ] && args+=(-u "$user:$(env_value ES_PASSWORD)")
  curl "${args[@]}" "$@"
}

# The major Java version of a Java home, from its release file (no JVM start).
java_major() {
  local jh="$1" v=""
  if [ -f "$jh/release" ]; then
    v="$(sed -n 's/^JAVA_VERSION="\([^"]*\)"/\1/p' "$jh/release")"
  fi
  if [ -z "$v" ] && [ -x "$jh/bin/java" ]; then
    v="$("$jh/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  fi
  v="${v#1.}"
  v="${v%%[!0-9]*}"
  echo "${v:-0}"
}

java_home() {
  local jh major
  if [ -n "${ES_JAVA_HOME:-}" ]; then
    jh="$ES_JAVA_HOME"
    [ -x "$jh/bin/java" ] || die "no $jh/bin/java: set ES_JAVA_HOME to a Java $(java_range) home"
    major="$(java_major "$jh")"
    if [ "$major" -lt "$MIN_JAVA" ] || [ "$major" -gt "$MAX_JAVA" ]; then
      die "Elasticsearch $ES_VERSION needs Java $(java_range); ES_JAVA_HOME=$jh is Java $major"
    fi
    echo "$jh"
    return
  fi
  # The newest Java in MIN_JAVA..MAX_JAVA among /usr/lib/jvm/* and the `java` on PATH.
  local best="" best_major=0 cand java seen=" "
  java="$(command -v java || true)"
  for cand in /usr/lib/jvm/* ${java:+"$(dirname "$(dirname "$(readlink -f "$java")")")"}; do
    [ -x "$cand/bin/java" ] || continue
    cand="$(readlink -f "$cand")"
    case "$seen" in *" $cand "*) continue ;; esac
    seen="$seen$cand "
    major="$(java_major "$cand")"
    if [ "$major" -ge "$MIN_JAVA" ] && [ "$major" -le "$MAX_JAVA" ] && [ "$major" -gt "$best_major" ]; then
      best="$cand" best_major="$major"
    fi
  done
  [ -n "$best" ] || die "Elasticsearch $ES_VERSION needs Java $(java_range) (the integ-test zip has no bundled JDK) and there is none under /usr/lib/jvm nor on PATH: install one (e.g. a Temurin 21 or 25 JDK) or set ES_JAVA_HOME"
  echo "$best"
}

cmd_install() {
  mkdir -p "$INGEST_CACHE"
  # One installer at a time per cache (parallel CI jobs, two clones); in a subshell
  # so that the lock's fd is not inherited by the server.
  (
    flock 9
    install_locked
  ) 9>"$INGEST_CACHE/.elasticsearch.lock"
}

install_locked() {
  if [ -f "$ES_INSTALL/.installed" ]; then
    install_shim
    log "Elasticsearch $ES_VERSION in $ES_INSTALL"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found: install Maven (apt-get install maven)"
  command -v unzip >/dev/null 2>&1 || die "unzip not found: apt-get install unzip"
  local t0=$SECONDS
  tmp="$(mktemp -d "$INGEST_CACHE/.elasticsearch-install.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  log "fetching $ARTIFACT with mvn"
  if ! (cd "$tmp" && mvn -B -q dependency:copy -Dartifact="$ARTIFACT" -DoutputDirectory="$tmp/dl") >"$tmp/mvn.log" 2>&1; then
    cat "$tmp/mvn.log" >&2
    die "mvn could not fetch $ARTIFACT; versions known to be served: 9.1.0, 8.19.0, 8.15.0: set ES_VERSION"
  fi
  log "unpacking into $ES_INSTALL"
  unzip -q "$tmp/dl/elasticsearch-$ES_VERSION.zip" -d "$tmp/unpacked"
  [ -x "$tmp/unpacked/elasticsearch-$ES_VERSION/bin/elasticsearch" ] || die "unexpected zip layout in $ARTIFACT"
  rm -rf "$ES_INSTALL"
  mv "$tmp/unpacked/elasticsearch-$ES_VERSION" "$ES_INSTALL"
  touch "$ES_INSTALL/.installed"
  rm -rf "$tmp"
  trap - EXIT
  log "installed Elasticsearch $ES_VERSION in $((SECONDS - t0)) s"
  install_shim
}

# The integ-test zip lacks the analysis-common module, whose pattern_capture and
# unique filters and uax_url_email tokenizer the .security index's "email" analyzer
# uses: without them the node cannot create .security, so no API keys ("Unknown
# filter type [pattern_capture]"). Maven Central serves no jar of that module, so
# this builds a small module with just those three (on the Lucene classes in lib/)
# with the JDK's javac, once per install.
SHIM=ingest-test-analysis
SHIM_CLASS=ingest.test.analysis.IngestTestAnalysisPlugin

# A JDK home (javac + jar) of Java >= MIN_JAVA: the one that runs the node, or another.
find_jdk() {
  local jh cand
  jh="$(java_home)"
  if [ -x "$jh/bin/javac" ] && [ -x "$jh/bin/jar" ]; then echo "$jh"; return 0; fi
  for cand in /usr/lib/jvm/*; do
    if [ ! -x "$cand/bin/javac" ] || [ ! -x "$cand/bin/jar" ]; then continue; fi
    if [ "$(java_major "$cand")" -ge "$MIN_JAVA" ]; then echo "$cand"; return 0; fi
  done
  return 1
}

install_shim() {
  local dir="$ES_INSTALL/modules/$SHIM" jdk work
  [ -f "$dir/.ingest-module" ] && return 0
  if ! jdk="$(find_jdk)"; then
    if [ "$SECURITY" = 1 ]; then die "ES_SECURITY=1 needs the $SHIM module, built with javac, and there is no JDK $MIN_JAVA+ with javac: set ES_JAVA_HOME to a JDK"; fi
    log "warning: no JDK $MIN_JAVA+ with javac: module $SHIM not built (only ES_SECURITY=1 needs it)"
    return 0
  fi
  local t0=$SECONDS
  work="$(mktemp -d "$INGEST_CACHE/.elasticsearch-shim.XXXXXX")"
  mkdir -p "$work/src" "$work/classes"
  shim_source >"$work/src/IngestTestAnalysisPlugin.java"
  if ! "$jdk/bin/javac" -nowarn --release "$MIN_JAVA" -cp "$ES_INSTALL/lib/*" -d "$work/classes" \
    "$work/src/IngestTestAnalysisPlugin.java" >"$work/javac.log" 2>&1; then
    cat "$work/javac.log" >&2
    rm -rf "$work"
    die "javac could not build the $SHIM module against Elasticsearch $ES_VERSION"
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  "$jdk/bin/jar" cf "$dir/$SHIM-$ES_VERSION.jar" -C "$work/classes" .
  cat >"$dir/plugin-descriptor.properties" <<EOF
# written by scripts/elasticsearch.sh: what the .security index needs of analysis-common
description=pattern_capture, unique, uax_url_email (built for the ingest tests)
version=$ES_VERSION
name=$SHIM
classname=$SHIM_CLASS
java.version=$MIN_JAVA
elasticsearch.version=$ES_VERSION
extended.plugins=
has.native.controller=false
EOF
  rm -rf "$work"
  touch "$dir/.ingest-module"
  log "built module $SHIM in $((SECONDS - t0)) s"
}

shim_source() {
  cat <<'JAVA'
package ingest.test.analysis;

import org.apache.lucene.analysis.CharArraySet;
import org.apache.lucene.analysis.TokenFilter;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.email.UAX29URLEmailTokenizer;
import org.apache.lucene.analysis.pattern.PatternCaptureGroupTokenFilter;
import org.apache.lucene.analysis.tokenattributes.CharTermAttribute;
import org.apache.lucene.analysis.tokenattributes.PositionIncrementAttribute;
import org.elasticsearch.index.analysis.TokenFilterFactory;
import org.elasticsearch.index.analysis.TokenizerFactory;
import org.elasticsearch.indices.analysis.AnalysisModule.AnalysisProvider;
import org.elasticsearch.plugins.AnalysisPlugin;
import org.elasticsearch.plugins.Plugin;

import java.io.IOException;
import java.util.List;
import java.util.Map;
import java.util.function.UnaryOperator;
import java.util.regex.Pattern;

/** pattern_capture, unique and uax_url_email, as the .security index's "email" analyzer needs them. */
public class IngestTestAnalysisPlugin extends Plugin implements AnalysisPlugin {
    @Override
    public Map<String, AnalysisProvider<TokenFilterFactory>> getTokenFilters() {
        AnalysisProvider<TokenFilterFactory> patternCapture = (indexSettings, env, name, settings) -> {
            List<String> regexes = settings.getAsList("patterns");
            if (regexes.isEmpty()) {
                throw new IllegalArgumentException("required setting 'patterns' is missing for token filter [" + name + "]");
            }
            Pattern[] patterns = regexes.stream().map(Pattern::compile).toArray(Pattern[]::new);
            boolean preserveOriginal = settings.getAsBoolean("preserve_original", true);
            return filter(name, in -> new PatternCaptureGroupTokenFilter(in, preserveOriginal, patterns));
        };
        AnalysisProvider<TokenFilterFactory> unique = (indexSettings, env, name, settings) -> {
            boolean samePosition = settings.getAsBoolean("only_on_same_position", false);
            return filter(name, in -> new Unique(in, samePosition));
        };
        return Map.of("pattern_capture", AnalysisPlugin.requiresAnalysisSettings(patternCapture), "unique", unique);
    }

    @Override
    public Map<String, AnalysisProvider<TokenizerFactory>> getTokenizers() {
        AnalysisProvider<TokenizerFactory> uaxUrlEmail = (indexSettings, env, name, settings) -> {
            int maxTokenLength = settings.getAsInt("max_token_length", 255);
            return TokenizerFactory.newFactory(name, () -> {
                UAX29URLEmailTokenizer tokenizer = new UAX29URLEmailTokenizer();
                tokenizer.setMaxTokenLength(maxTokenLength);
                return tokenizer;
            });
        };
        return Map.of("uax_url_email", uaxUrlEmail);
    }

    private static TokenFilterFactory filter(String name, UnaryOperator<TokenStream> make) {
        return new TokenFilterFactory() {
            @Override
            public String name() {
                return name;
            }

            @Override
            public TokenStream create(TokenStream in) {
                return make.apply(in);
            }
        };
    }

    /** Drops a token whose term was seen before (in the stream, or at the same position). */
    static final class Unique extends TokenFilter {
        private final CharTermAttribute term = addAttribute(CharTermAttribute.class);
        private final PositionIncrementAttribute posInc = addAttribute(PositionIncrementAttribute.class);
        private final CharArraySet seen = new CharArraySet(8, false);
        private final boolean samePosition;

        Unique(TokenStream in, boolean samePosition) {
            super(in);
            this.samePosition = samePosition;
        }

        @Override
        public boolean incrementToken() throws IOException {
            while (input.incrementToken()) {
                if (samePosition && posInc.getPositionIncrement() > 0) {
                    seen.clear();
                }
                String t = term.toString();
                if (seen.contains(t) == false) {
                    seen.add(t);
                    return true;
                }
            }
            return false;
        }

        @Override
        public void reset() throws IOException {
            super.reset();
            seen.clear();
        }
    }
}
JAVA
}

# A test CA and a node certificate for 127.0.0.1 and localhost, made once per run dir
# (all four files together, so that node.crt is always signed by ca.crt).
make_certs() {
  local d="$RUN_DIR/certs" f
  for f in ca.crt ca.key node.crt node.key; do
    [ -s "$d/$f" ] || break
    f=""
  done
  [ -n "$f" ] || return 0
  command -v openssl >/dev/null 2>&1 || die "openssl not found (needed for ES_SECURITY=1): apt-get install openssl"
  log "making a test CA and a node certificate in $d"
  rm -rf "$d"
  mkdir -p "$d.tmp"
  (
    set -e
    cd "$d.tmp" || exit 1
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
      -keyout ca.key -out ca.crt -subj "/CN=ingest-test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout node.key -out node.csr -subj "/CN=localhost"
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >node.ext
    openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
      -extfile node.ext -out node.crt
    rm -f node.csr node.ext ca.srl
    chmod 644 ca.crt node.crt
  ) >"$RUN_DIR/logs/openssl.log" 2>&1 || { cat "$RUN_DIR/logs/openssl.log" >&2; rm -rf "$d.tmp"; die "openssl could not make the certificates"; }
  mv "$d.tmp" "$d"
}

write_config() {
  local port="$1" conf="$RUN_DIR/config"
  rm -rf "$conf"
  mkdir -p "$conf/jvm.options.d" "$RUN_DIR/data" "$RUN_DIR/logs" "$RUN_DIR/tmp"
  cp -R "$ES_INSTALL/config/." "$conf/"
  # GC log and crash files into the run dir, not the shared install (8.x: relative to
  # the install dir; 9.x: relative to the logs dir).
  sed -i \
    -e "s|file=[^:]*gc\.log:|file=$RUN_DIR/logs/gc.log:|" -e "s|filecount=32,filesize=64m|filecount=2,filesize=16m|" \
    -e "s|^-XX:HeapDumpPath=.*|-XX:HeapDumpPath=$RUN_DIR/data|" \
    -e "s|^-XX:ErrorFile=.*|-XX:ErrorFile=$RUN_DIR/logs/hs_err_pid%p.log|" \
    "$conf/jvm.options"
  # Heap from ES_HEAP (jvm.options has none: ES would size it from the machine's RAM).
  # C1 only: starts in about half the time on a busy 2-core machine, and is plenty for
  # test loads (ES_JAVA_OPTS=-XX:TieredStopAtLevel=4 brings C2 back).
  printf '%s\n' "-Xms$HEAP" "-Xmx$HEAP" "-XX:HeapDumpPath=$RUN_DIR/data" "-XX:TieredStopAtLevel=1" \
    >"$conf/jvm.options.d/ingest.options"
  cat >"$conf/elasticsearch.yml" <<EOF
# written by scripts/elasticsearch.sh; regenerated at every start
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
action.destructive_requires_name: false
EOF
  if [ "$SECURITY" = 1 ]; then
    make_certs
    mkdir -p "$conf/certs"
    cp "$RUN_DIR/certs/ca.crt" "$RUN_DIR/certs/node.crt" "$RUN_DIR/certs/node.key" "$conf/certs/"
    # A single node (discovery.type single-node) needs no transport TLS.
    cat >>"$conf/elasticsearch.yml" <<EOF
xpack.security.enabled: true
xpack.security.authc.api_key.enabled: true
xpack.security.transport.ssl.enabled: false
xpack.security.http.ssl.enabled: true
xpack.security.http.ssl.key: certs/node.key
xpack.security.http.ssl.certificate: certs/node.crt
xpack.security.http.ssl.certificate_authorities: [ "certs/ca.crt" ]
EOF
    # The elastic user's password: bootstrap.password in the keystore (used while the
    # .security index holds no password for elastic, i.e. always here). The keystore
    # tool costs a JVM start, so its keystore is kept in certs/ for the next starts
    # with the same version and password.
    local id
    id="$ES_VERSION $(printf '%s' "$PASSWORD" | sha256sum | cut -c1-64)"
    if [ -f "$RUN_DIR/certs/elasticsearch.keystore" ] && [ "$(cat "$RUN_DIR/certs/keystore.id" 2>/dev/null)" = "$id" ]; then
      cp "$RUN_DIR/certs/elasticsearch.keystore" "$conf/"
    else
      rm -f "$conf/elasticsearch.keystore" "$RUN_DIR/certs/keystore.id"
      if ! printf '%s' "$PASSWORD" | ES_JAVA_HOME="$2" ES_PATH_CONF="$conf" \
        "$ES_INSTALL/bin/elasticsearch-keystore" add -x -f bootstrap.password >"$RUN_DIR/logs/keystore.log" 2>&1; then
        cat "$RUN_DIR/logs/keystore.log" >&2
        die "elasticsearch-keystore could not set bootstrap.password"
      fi
      cp "$conf/elasticsearch.keystore" "$RUN_DIR/certs/elasticsearch.keystore"
      echo "$id" >"$RUN_DIR/certs/keystore.id"
    fi
  else
    echo "xpack.security.enabled: false" >>"$conf/elasticsearch.yml"
  fi
}

# One start or stop at a time per run dir (two test processes starting the same node);
# in a subshell, and the server does not inherit the lock's fd.
with_run_lock() {
  mkdir -p "$RUN_DIR"
  (
    flock 8
    "$@"
  ) 8>"$RUN_DIR/.lock"
}

cmd_start() { with_run_lock start_locked; }

start_locked() {
  local pid url
  if pid="$(running_pid)"; then
    url="$(current_url)"
    case "$SECURITY:$url" in
      1:https:* | 0:http:*) ;;
      *) die "already running (pid $pid) at $url, not as ES_SECURITY=$SECURITY asks: stop it first, or use another ES_RUN_DIR" ;;
    esac
    log "already running (pid $pid) at $url"
    echo "$url"
    return 0
  fi
  rm -f "$PID_FILE"
  cmd_install
  local jh port scheme=http
  jh="$(java_home)"
  port="${ES_PORT:-9200}"
  if [ "$port" = 0 ] || [ "$port" = auto ]; then port="$(free_port ES_PORT)"; fi
  if port_busy "$port"; then
    die "port $port on 127.0.0.1 is in use: stop what holds it, or set ES_PORT (0 picks a free port)"
  fi
  mkdir -p "$RUN_DIR"
  if [ "${ES_KEEP_DATA:-0}" != 1 ]; then rm -rf "$RUN_DIR/data"; fi
  rm -rf "$RUN_DIR/logs" "$RUN_DIR/tmp"
  write_config "$port" "$jh"
  if [ "$SECURITY" = 1 ]; then scheme=https; fi
  url="$scheme://127.0.0.1:$port"
  (
    umask 077
    echo "ES_URL=$url"
    if [ "$SECURITY" = 1 ]; then
      echo "ES_USERNAME=elastic"
      echo "ES_PASSWORD=$PASSWORD"
      echo "ES_CA=$RUN_DIR/certs/ca.crt"
    fi
  ) >"$RUN_DIR/env.tmp"
  mv "$RUN_DIR/env.tmp" "$RUN_DIR/env"

  # Elasticsearch refuses to run as root. As root (CI here runs as root), start it in
  # a new user namespace where root is mapped to nobody (65534): it sees itself as
  # nobody, while the kernel still checks its file access as root's, so the root-owned
  # cache works. The mapping (not just `unshare --user`, as opensearch.sh does) is
  # needed because the JVM attach mechanism, which ES uses to load its entitlement
  # agent into itself, chown()s its socket to the euid, and fails on an unmapped one.
  local as_non_root=()
  if [ "$(id -u)" = 0 ]; then
    unshare --user --map-user=65534 --map-group=65534 true 2>/dev/null \
      || die "running as root, and 'unshare --user --map-user=65534 --map-group=65534' fails here (needs util-linux 2.38+ and user namespaces): Elasticsearch refuses root; run this script as a non-root user"
    as_non_root=(unshare --user --map-user=65534 --map-group=65534)
  fi

  local t0=$SECONDS t0_ms
  t0_ms="$(now_ms)"
  log "starting Elasticsearch $ES_VERSION on $url (ES_SECURITY=$SECURITY, heap $HEAP, Java $(java_major "$jh") from $jh, run dir $RUN_DIR)"
  (
    exec 8>&-
    unset JAVA_HOME JAVA_TOOL_OPTIONS _JAVA_OPTIONS JAVA_OPTS
    export ES_JAVA_HOME="$jh" ES_PATH_CONF="$RUN_DIR/config" ES_TMPDIR="$RUN_DIR/tmp"
    # setsid, unshare and bin/elasticsearch all exec, so $! is the launcher JVM's pid
    # and the leader of a new process group that holds the server JVM too.
    exec setsid "${as_non_root[@]}" "$ES_INSTALL/bin/elasticsearch" >"$RUN_DIR/logs/stdout.log" 2>&1 </dev/null
  ) &
  pid=$!
  echo "$pid" >"$PID_FILE"

  local deadline=$((SECONDS + START_TIMEOUT)) code=""
  until code="$(node_curl -sS -m 5 -o /dev/null -w '%{http_code}' "$url/_cluster/health?wait_for_status=yellow&timeout=2s" 2>/dev/null)" && [ "$code" = 200 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      stop_group "$pid"
      rm -f "$PID_FILE"
      tail -n 40 "$RUN_DIR/logs/stdout.log" >&2 || true
      die "Elasticsearch exited during startup; logs in $RUN_DIR/logs"
    fi
    if [ "$code" = 401 ] && [ $((SECONDS - t0)) -ge 30 ]; then
      stop_locked || true
      die "the node answers 401 to elastic:\$ES_PASSWORD; logs in $RUN_DIR/logs"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 40 "$RUN_DIR/logs/stdout.log" >&2 || true
      stop_locked || true
      die "Elasticsearch not yellow after ${START_TIMEOUT}s (ES_START_TIMEOUT; last HTTP status ${code:-none}); logs in $RUN_DIR/logs"
    fi
    sleep 0.25
  done
  local ms
  ms=$(($(now_ms) - t0_ms))
  log "yellow after $((ms / 1000)).$((ms % 1000 / 100)) s (pid $pid)"
  echo "$url"
}

# Ends every process of the group led by the launcher (the launcher stops the server
# on SIGTERM; the group also catches a server left behind by a killed launcher).
stop_group() {
  local pid="$1"
  kill -TERM "$pid" 2>/dev/null || kill -TERM -- "-$pid" 2>/dev/null || return 0
  for _ in $(seq 1 120); do
    kill -0 -- "-$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  log "process group $pid still alive after 60 s: SIGKILL"
  kill -KILL -- "-$pid" 2>/dev/null || true
  while kill -0 -- "-$pid" 2>/dev/null; do sleep 0.2; done
}

cmd_stop() {
  if [ ! -d "$RUN_DIR" ]; then log "not running"; return 0; fi
  with_run_lock stop_locked
}

stop_locked() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  stop_group "$pid"
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid url
  if ! pid="$(running_pid)"; then
    echo "elasticsearch: not running"
    return 3
  fi
  url="$(current_url)"
  echo "elasticsearch: running, pid $pid, $url"
  node_curl -fsS -m 10 "$url/_cluster/health?pretty" || { echo "elasticsearch: pid $pid alive but $url does not answer"; return 1; }
}

cmd_url() {
  running_pid >/dev/null || die "not running: scripts/elasticsearch.sh start"
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
