#!/usr/bin/env python3
"""Times whole commands: wall time, CPU time (user+sys) and peak RSS of each
run. CPU and RSS come from GNU time (/usr/bin/time), which forks the command
from its own small process: rusage taken directly from a child of this
Python process would report Python's RSS, because ru_maxrss survives exec. Prints one table row per command and, with
--json, writes the raw numbers. Used by scripts/bench-*.

usage: bench.py --runs N [--warmup K] [--json FILE] [--baseline LABEL] LABEL=COMMAND ...
"""
import argparse, json, os, shlex, statistics, subprocess, sys, time


GNU_TIME = "/usr/bin/time"
RUSAGE_FILE = f"/tmp/shellyctl-bench-{os.getpid()}.rusage"


def run_once(argv, env):
    full = [GNU_TIME, "-f", "%M", "-o", RUSAGE_FILE, *argv]
    t0 = time.perf_counter()
    p = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = p.stderr.read()
    # wait4 on GNU time includes the CPU of the child it reaped, in
    # microseconds (GNU time itself prints only 10 ms steps).
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        msg = err.decode(errors="replace").strip()[-500:]
        sys.exit(f"bench: {' '.join(argv)} exited {p.returncode}: {msg}")
    with open(RUSAGE_FILE) as f:
        rss_kb = f.read().split()[-1]
    return wall, ru.ru_utime + ru.ru_stime, int(rss_kb) / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--baseline", help="label whose median wall time the ratios use")
    ap.add_argument("commands", nargs="+")
    a = ap.parse_args()
    if not os.access(GNU_TIME, os.X_OK):
        sys.exit("bench: GNU time is needed (apt-get install time)")
    env = dict(os.environ)
    results = {}
    for spec in a.commands:
        label, _, cmd = spec.partition("=")
        argv = shlex.split(cmd)
        for _ in range(a.warmup):
            run_once(argv, env)
        samples = [run_once(argv, env) for _ in range(a.runs)]
        results[label] = {
            "wall_ms": [s[0] * 1000 for s in samples],
            "cpu_ms": [s[1] * 1000 for s in samples],
            "rss_mb": [s[2] for s in samples],
        }
    base = statistics.median(results[a.baseline]["wall_ms"]) if a.baseline else None
    hdr = f"{'command':<28} {'runs':>4} {'wall median':>11} {'min':>7} {'max':>7} {'cpu median':>10} {'peak RSS':>9}"
    if base:
        hdr += f" {'x ' + a.baseline:>14}"
    print(hdr)
    for label, r in results.items():
        w, c, m = r["wall_ms"], r["cpu_ms"], r["rss_mb"]
        line = (f"{label:<28} {len(w):>4} {statistics.median(w):>9.2f}ms {min(w):>5.2f}ms {max(w):>5.2f}ms"
                f" {statistics.median(c):>8.2f}ms {max(m):>7.1f}MB")
        if base:
            line += f" {statistics.median(w) / base:>14.2f}"
        print(line)
    print("(wall and CPU include GNU time's own fork+exec, about 1 ms: compare with the baseline row)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
