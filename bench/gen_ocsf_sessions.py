#!/usr/bin/env python3
"""Deterministic OCSF session stream for the correlate benchmark (Python stdlib only).

    gen_ocsf_sessions.py --events N --concurrent K [--ends yes|no] [--seed S] > out.ndjson

Emits OCSF Authentication events as the `ocsf` transform produces them (docs/correlate.md):
K sessions are open at any time; each step picks one at random and either ends it (and opens
a fresh one) or, with --ends no, only opens new sessions (the memory benchmark: N open
sessions at the end). Times advance 50 ms per event so nothing reaches max_session_age.
"""
import argparse
import json
import random
import sys
import uuid

T0 = 1_741_593_600_000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--concurrent", type=int, default=100_000)
    ap.add_argument("--ends", choices=["yes", "no"], default="yes")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    out = sys.stdout
    users = ["CORP\\\\user%02d" % i for i in range(50)]
    hosts = ["res-rds-waw-%02d" % i for i in range(20)]
    n = 0
    t = T0

    def new_id():
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def emit(activity, sid, user, host):
        nonlocal n, t
        n += 1
        t += 50
        out.write(
            '{"class_uid":3002,"category_uid":3,"activity_id":%d,"time":%d,'
            '"metadata":{"uid":"%s","product":{"name":"Windows"},"version":"1.8.0"},'
            '"session":{"uid":"%s"},"user":{"name":"%s"},"dst_endpoint":{"hostname":"%s"},'
            '"src_endpoint":{"ip":"198.51.100.%d"}}\n'
            % (activity, t, new_id(), sid, user, host, n % 250)
        )

    if a.ends == "no":
        while n < a.events:
            emit(1, new_id(), rng.choice(users), rng.choice(hosts))
        return
    open_sessions = []
    while n < a.events and len(open_sessions) < a.concurrent:
        s = (new_id(), rng.choice(users), rng.choice(hosts))
        open_sessions.append(s)
        emit(1, *s)
    while n < a.events:
        i = rng.randrange(len(open_sessions))
        emit(2, *open_sessions[i])
        s = (new_id(), rng.choice(users), rng.choice(hosts))
        open_sessions[i] = s
        if n < a.events:
            emit(1, *s)


if __name__ == "__main__":
    main()
