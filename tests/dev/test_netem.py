"""The impaired link between two namespaces (appliance_dev.netem) really impairs.

UDP packets from namespace a to b arrive with the configured loss (wide
statistical bounds) and never earlier than delay - jitter; the upper bound
adds a slack scaled by the timeout factor, since a busy machine can only make
the forwarder later, never earlier. Then a real aiortc call (one process per
namespace, ICE on the namespace addresses only, no ICE servers) connects
across the link and carries RTP both ways.

Needs root (namespaces and /dev/net/tun): elsewhere these tests are skipped
with the reason :func:`unavailable_reason` gives.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance_dev.netem import ImpairedLink, Impairment, unavailable_reason
from appliance_dev.netem_call import call_across
from tests.conftest import TIMEOUT_FACTOR

pytestmark = pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"netem link: {unavailable_reason()}"
)

PORT = 40000
PACKETS = 400

# Receives until told to stop on stdin; prints each (seq, one-way delay).
RECEIVER = """
import json, select, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
got = []
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [])
    if sys.stdin in ready:
        break
    data = s.recv(100)
    now = time.monotonic()
    seq, sent = data.decode().split()
    got.append((int(seq), now - float(sent)))
print(json.dumps(got), flush=True)
"""

SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for seq in range(int(sys.argv[3])):
    s.sendto(f"{seq} {time.monotonic()!r}".encode(), (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.005)
"""


def test_udp_across_the_link_is_lost_delayed_and_reordered():
    spec = Impairment(loss=0.10, delay_s=0.040, jitter_s=0.010)
    slack = 0.5 * TIMEOUT_FACTOR
    with ImpairedLink(spec, seed=5) as link:
        receiver = subprocess.Popen(
            link.command(
                "b", [sys.executable, "-c", RECEIVER, link.address("b"), str(PORT)]
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert receiver.stdout is not None and receiver.stdin is not None
            assert receiver.stdout.readline().strip() == "ready"
            subprocess.run(
                link.command(
                    "a",
                    [
                        sys.executable,
                        "-c",
                        SENDER,
                        link.address("b"),
                        str(PORT),
                        str(PACKETS),
                    ],
                ),
                check=True,
                timeout=60 * TIMEOUT_FACTOR,
            )
            # Everything the forwarder holds is out by delay + jitter (+ slack).
            time.sleep(spec.delay_s + spec.jitter_s + slack)
            receiver.stdin.write("stop\n")
            receiver.stdin.flush()
            got = json.loads(receiver.stdout.readline())
            receiver.wait(30)
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.wait()
    seqs = [seq for seq, _delay in got]
    delays = [delay for _seq, delay in got]
    assert len(set(seqs)) == len(seqs)  # nothing duplicated
    lost = 1 - len(seqs) / PACKETS
    assert 0.04 <= lost <= 0.18, f"{100 * lost:.1f} % lost, 10 % configured"
    assert min(delays) >= spec.delay_s - spec.jitter_s
    assert max(delays) <= spec.delay_s + spec.jitter_s + slack
    assert max(delays) - min(delays) >= spec.jitter_s  # jitter applied
    assert seqs != sorted(seqs)  # and so packets overtake each other
    assert link.stats["a_to_b"]["seen"] >= PACKETS
    assert link.stats["a_to_b"]["dropped"] == PACKETS - len(seqs)


def test_aiortc_call_connects_across_the_link():
    spec = Impairment(loss=0.05, delay_s=0.040, jitter_s=0.010)
    with ImpairedLink(spec, seed=2) as link:
        report = call_across(link, "aiortc", seconds=1.0, limit_s=30 * TIMEOUT_FACTOR)
    for side in "ab":
        assert report[side]["connected"]["event"] == "connected"
        assert report[side]["done"]["packets_received"] > 0
    # The media went through the forwarder, both ways.
    assert link.stats["a_to_b"]["seen"] > 20
    assert link.stats["b_to_a"]["seen"] > 20


def test_an_error_inside_the_link_still_removes_everything():
    with pytest.raises(RuntimeError), ImpairedLink(Impairment()) as link:
        names = set(link.namespaces.values())
        pid = link.forwarder_pid
        assert names <= set(_namespaces())
        raise RuntimeError("the test body failed")
    assert not names & set(_namespaces())
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert link.forwarder_pid is None


def _namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
