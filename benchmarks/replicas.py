"""``python -m benchmarks.replicas``: next-sample and infer throughput with 1, 2 and 3 replicas on one PostgreSQL.

Starts Debian's PostgreSQL (as the tests do, with every statement logged), three server processes on one
studies folder and one database, then for 1, 2 and 3 of them runs concurrent annotators (each its own
client id, calls spread round-robin over the replicas in use) for a fixed time. Reports calls per second
and the database statements per call (counted in PostgreSQL's statement log). A report, not a target:
on a 2-core machine the replicas, the database and the clients share the same cores.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, List, Tuple

from monailabel.datasets import write_phantoms
from monailabel_client import MonaiLabelClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration.postgres import PostgresServer, postgres_server  # noqa: E402

CONF = {"roi_size": "32,32,32"}


def _replica(app: Path, studies: Path, url: str) -> Tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "monailabel_server", "--log-level", "WARNING", "start_server", "--app", str(app),
         "--studies", str(studies), "--port", "0", "--database", url,
         *[a for k, v in CONF.items() for a in ("--conf", k, v)]],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            return proc, line.strip().rsplit(" ", 1)[1]
    raise RuntimeError("a replica did not start")


def _statements(pg: PostgresServer) -> int:
    text = (pg.folder / "server.log").read_text(errors="replace")
    return text.count("LOG:  statement:") + text.count("LOG:  execute")


def _load(addresses: List[str], threads: int, seconds: float, call: Callable[[MonaiLabelClient, int], None]) -> int:
    done = [0] * threads
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        with MonaiLabelClient(addresses[i % len(addresses)], timeout=120) as c:
            while time.monotonic() < stop:
                call(c, i)
                done[i] += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done)


def main(argv: List[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement (default 10)")
    p.add_argument("--annotators", type=int, default=8, help="concurrent next-sample clients (default 8)")
    p.add_argument("--infer-clients", type=int, default=3, help="concurrent infer clients (default 3)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="monailabel-bench-replicas-"))
    app = tmp / "app"
    shutil.copytree(ROOT / "monailabel" / "apps" / "radiology", app,
                    ignore=shutil.ignore_patterns("model", "__pycache__"))
    studies = tmp / "studies"
    ids = write_phantoms(studies, count=40, shape=(32, 32, 32), labeled=0)
    procs: List[subprocess.Popen] = []
    rows = []
    try:
        with postgres_server(log_statements=True) as pg:
            url = pg.create_database("bench")
            addresses = []
            for _ in range(3):
                proc, address = _replica(app, studies, url)
                procs.append(proc)
                addresses.append(address)
            for address in addresses:  # each replica loads its network on its first call: not measured
                with MonaiLabelClient(address, timeout=300) as c:
                    c.infer("segmentation", image_id=ids[0])
            for n in (1, 2, 3):
                before = _statements(pg)
                calls = _load(addresses[:n], args.annotators, args.seconds,
                              lambda c, i: c.next_sample("random", client_id=f"annotator-{i}") and None)
                time.sleep(0.5)  # the log is written as statements run; let the last lines land
                per_call = (_statements(pg) - before) / max(1, calls)
                infers = _load(addresses[:n], args.infer_clients, args.seconds,
                               lambda c, i: c.infer("segmentation", image_id=ids[i % len(ids)]) and None)
                rows.append((n, calls / args.seconds, per_call, infers / args.seconds))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'replicas':>8} | {'next-sample/s':>13} | {'db statements/next-sample':>25} | {'infer/s':>7}")
    for n, ns, per_call, inf in rows:
        print(f"{n:>8} | {ns:>13.1f} | {per_call:>25.1f} | {inf:>7.2f}")


if __name__ == "__main__":
    main()
