# Sourced by the infra scripts: stop daemons by the pids in their pidfiles (only what we started, never by name).
stop_pidfiles(){ # stop_pidfiles FILE... : SIGTERM all at once (daemons take ~1.5-3s each to exit), then wait
  local f p pids=""; for f in "$@"; do [ -f "$f" ] || continue; p=$(cat "$f")
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then kill "$p"; pids="$pids $p"; fi; done
  for _ in $(seq 1 150); do local left=""; for p in $pids; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
    pids=$left; [ -z "$pids" ] && break; sleep 0.1; done
  for p in $pids; do echo "pid $p ignored SIGTERM for 15s, sending SIGKILL" >&2; kill -9 "$p" 2>/dev/null; done
  rm -f "$@"; }
