# Ports on 127.0.0.1 for the test servers' scripts (sourced; needs `die`).

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port VARIABLE: a port that was free a moment ago; VARIABLE names the
# setting to use instead when none is found.
free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
    return
  fi
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    port_busy "$p" || { echo "$p"; return; }
  done
  die "found no free port; set $1"
}
