#!/bin/sh
# sessiontrail PAM hook: sends session_notify (open_session) and session_end_event
# (close_session) to a sessiontrail http_server, in the schema of docs/agent-events.md.
#
#   /etc/pam.d/sshd:  session optional pam_exec.so quiet /usr/local/sbin/sessiontrail-pam.sh
#
# Every record is first written to a spool directory, then a background flusher POSTs the
# spool in order. A record leaves the spool only when the server accepted it (2xx) or said it
# will never accept it (listed in "rejected", or a 4xx other than 401/403/408/429: moved to
# rejected/ and logged). On 429/503, 5xx or no connection the flusher backs off (doubling up
# to SESSIONTRAIL_BACKOFF_MAX_S) and keeps trying for SESSIONTRAIL_RETRY_FOR_S; the next PAM
# event starts it again. It never blocks or fails the login: the hook always exits 0.
#
# Configuration (environment, or the file $SESSIONTRAIL_AGENT_CONF, default
# /etc/sessiontrail/agent.conf, sourced as shell):
#   SESSIONTRAIL_URL         base URL, e.g. https://audit.example.com:8443  (required)
#   SESSIONTRAIL_TOKEN_FILE  file holding the bearer token (default /etc/sessiontrail/token)
#   SESSIONTRAIL_SPOOL       spool directory (default /var/spool/sessiontrail)
#   SESSIONTRAIL_RESOURCE_ID resource id (default: the host name)
#   SESSIONTRAIL_CACERT      CA bundle for a private CA (optional)
#   SESSIONTRAIL_BACKOFF_MAX_S  longest wait between attempts (default 300)
#   SESSIONTRAIL_RETRY_FOR_S    how long one flusher keeps trying (default 3600)
# Usage outside PAM: `sessiontrail-pam.sh flush` sends the spool in the foreground once.

set -u
CONF=${SESSIONTRAIL_AGENT_CONF:-/etc/sessiontrail/agent.conf}
# shellcheck disable=SC1090
[ -r "$CONF" ] && . "$CONF"
URL=${SESSIONTRAIL_URL:-}
TOKEN_FILE=${SESSIONTRAIL_TOKEN_FILE:-/etc/sessiontrail/token}
SPOOL=${SESSIONTRAIL_SPOOL:-/var/spool/sessiontrail}
HOST_SHORT=$(hostname -s 2>/dev/null || hostname)
RESOURCE_ID=${SESSIONTRAIL_RESOURCE_ID:-$HOST_SHORT}
BACKOFF_MAX=${SESSIONTRAIL_BACKOFF_MAX_S:-300}
RETRY_FOR=${SESSIONTRAIL_RETRY_FOR_S:-3600}
# A slow server must not hold a login or a flusher forever.
CONNECT_TIMEOUT_S=5
REQUEST_TIMEOUT_S=30

log() { logger -t sessiontrail-pam -- "$*" 2>/dev/null || echo "sessiontrail-pam: $*" >&2; }

# JSON string literal: escapes backslash and quote, drops control characters.
json_str() {
  printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

uuid() { cat /proc/sys/kernel/random/uuid; }

# RFC 3339 with nanoseconds and the local offset (what the schema's timestamp accepts).
now_rfc3339() { date +%Y-%m-%dT%H:%M:%S.%N%:z; }

# open_session and close_session of one login run in the same PAM-calling process (sshd,
# login): that process id and the tty identify the session between the two calls.
session_key() { printf '%s-%s' "$PPID" "$(printf '%s' "${PAM_TTY:-notty}" | tr -c 'A-Za-z0-9' '_')"; }

enqueue() { # $1 = JSON record
  mkdir -p "$SPOOL/queue" "$SPOOL/sessions" "$SPOOL/rejected" || return 1
  name="$(date +%s%N)-$(uuid).json"
  printf '%s\n' "$1" > "$SPOOL/queue/.$name.tmp" && mv "$SPOOL/queue/.$name.tmp" "$SPOOL/queue/$name"
}

build_event() {
  ts=$(now_rfc3339)
  key=$(session_key)
  user_id="$HOST_SHORT\\${PAM_USER:-unknown}"
  case "${PAM_TTY:-}" in
    tty[0-9]*|/dev/tty[0-9]*|:*) channel=Console ;;
    *) channel=SSH ;;
  esac
  rhost=${PAM_RHOST:-}
  case "$rhost" in
    *[!0-9a-fA-F.:]*|'') client_ip=null ;;
    *) client_ip=$(json_str "$rhost") ;;
  esac
  if [ -n "$rhost" ]; then client_host=$(json_str "$rhost"); else client_host=null; fi
  case "$PAM_TYPE" in
    open_session)
      sid=$(uuid)
      mkdir -p "$SPOOL/sessions" && printf '%s %s\n' "$sid" "$(date +%s)" > "$SPOOL/sessions/$key"
      printf '{"schema_version":"1.2","event_type":"session_notify","event_id":%s,"timestamp":%s,"event_trigger":"logon","session_id":%s,"resource_id":%s,"host_name":%s,"user_id":%s,"user_name":%s,"channel_type":%s,"client":{"host":%s,"ip":%s},"client_env":{"os":"Linux","os_version":%s,"app":%s},"source_events":[{"log":"pam","service":%s,"tty":%s}]}' \
        "$(json_str "$(uuid)")" "$(json_str "$ts")" "$(json_str "$sid")" "$(json_str "$RESOURCE_ID")" \
        "$(json_str "$HOST_SHORT")" "$(json_str "$user_id")" "$(json_str "${PAM_USER:-}")" \
        "$(json_str "$channel")" "$client_host" "$client_ip" "$(json_str "$(uname -r)")" \
        "$(json_str "${PAM_SERVICE:-}")" "$(json_str "${PAM_SERVICE:-}")" "$(json_str "${PAM_TTY:-}")"
      ;;
    close_session)
      sid=''; started=''
      if [ -r "$SPOOL/sessions/$key" ]; then
        read -r sid started < "$SPOOL/sessions/$key"
        rm -f "$SPOOL/sessions/$key"
      fi
      # No matching open (the hook was installed mid-session): a new id; the pipeline
      # reports it as an end-only session.
      [ -n "$sid" ] || sid=$(uuid)
      duration=''
      [ -n "$started" ] && duration=",\"duration_s\":$(( $(date +%s) - started ))"
      printf '{"schema_version":"1.2","event_type":"session_end_event","event_id":%s,"timestamp":%s,"end_trigger":"logoff","reason":"user","session_id":%s,"resource_id":%s,"host_name":%s,"user_id":%s%s,"source_events":[{"log":"pam","service":%s,"tty":%s}]}' \
        "$(json_str "$(uuid)")" "$(json_str "$ts")" "$(json_str "$sid")" "$(json_str "$RESOURCE_ID")" \
        "$(json_str "$HOST_SHORT")" "$(json_str "$user_id")" "$duration" \
        "$(json_str "${PAM_SERVICE:-}")" "$(json_str "${PAM_TTY:-}")"
      ;;
    *) return 1 ;;
  esac
}

# Sends one spooled record. Returns 0 when it left the queue, 1 to stop and retry later.
send_one() { # $1 = file
  [ -n "$URL" ] || { log "SESSIONTRAIL_URL is not set; records stay in $SPOOL/queue"; return 1; }
  [ -r "$TOKEN_FILE" ] || { log "token file $TOKEN_FILE is not readable; records stay queued"; return 1; }
  hdr="$SPOOL/.auth-header"
  # The token goes to curl through a file, never on a command line other users can read.
  (umask 077; printf 'Authorization: Bearer %s\n' "$(tr -d '\r\n' < "$TOKEN_FILE")" > "$hdr")
  set -- "$1" --silent --show-error --output "$SPOOL/.response" --write-out '%{http_code}' \
    --connect-timeout "$CONNECT_TIMEOUT_S" --max-time "$REQUEST_TIMEOUT_S" \
    -H @"$hdr" -H 'Content-Type: application/json; charset=utf-8' \
    --data-binary @"$1" "$URL/api/events"
  [ -n "${SESSIONTRAIL_CACERT:-}" ] && set -- "$@" --cacert "$SESSIONTRAIL_CACERT"
  file=$1; shift
  code=$(curl "$@" 2>/dev/null) || code=000
  rm -f "$hdr"
  case "$code" in
    2??)
      if grep -q '"rejected":\[{' "$SPOOL/.response" 2>/dev/null; then
        log "server rejected $(basename "$file"): $(head -c 300 "$SPOOL/.response")"
        mv "$file" "$SPOOL/rejected/"
      else
        rm -f "$file"
      fi
      return 0 ;;
    401|403) log "server refused the token (HTTP $code); check $TOKEN_FILE"; return 1 ;;
    408|429|000|5??) return 1 ;;
    4??)
      log "server will never accept $(basename "$file") (HTTP $code): $(head -c 300 "$SPOOL/.response")"
      mv "$file" "$SPOOL/rejected/"; return 0 ;;
    *) return 1 ;;
  esac
}

# Sends the queue in order; 0 when it is empty.
flush_once() {
  for f in "$SPOOL"/queue/*.json; do
    [ -e "$f" ] || return 0
    send_one "$f" || return 1
  done
  return 0
}

# One flusher at a time (flock on the spool), retrying with doubling backoff.
flush_with_retry() {
  [ -n "$URL" ] || { log "SESSIONTRAIL_URL is not set; records stay in $SPOOL/queue"; return 1; }
  exec 9>"$SPOOL/.flush.lock"
  flock -n 9 || return 0
  wait_s=1
  deadline=$(( $(date +%s) + RETRY_FOR ))
  while ! flush_once; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "server unreachable; records stay in $SPOOL/queue for the next attempt"; return 1; }
    sleep "$wait_s"
    wait_s=$(( wait_s * 2 )); [ "$wait_s" -le "$BACKOFF_MAX" ] || wait_s=$BACKOFF_MAX
  done
}

main() {
  case "${1:-}" in
    flush) mkdir -p "$SPOOL/queue" "$SPOOL/rejected"; flush_once; exit $? ;;
  esac
  case "${PAM_TYPE:-}" in
    open_session|close_session) ;;
    *) exit 0 ;;
  esac
  record=$(build_event) && enqueue "$record" || log "could not spool a $PAM_TYPE record in $SPOOL"
  # Detached, so the login never waits for the network.
  ( flush_with_retry </dev/null >/dev/null 2>&1 & ) 
  exit 0
}

main "$@"
