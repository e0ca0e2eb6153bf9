"""The master's workers as a display and the summary show them: one row
per host (data; the display draws it)."""

from __future__ import annotations

import time

from flac2all.cluster.peers import Peer
from flac2all.cluster.protocol import Health
from flac2all.model import HostRow


def about(health: Health) -> str:
    """What a worker host runs on and its encoders' versions, as its health
    said them: "FreeBSD 14.1; lame 3.100, opusenc 0.2"."""
    versions = ", ".join(f"{program} {version}" for program, version in health.versions)
    return "; ".join(part for part in (health.system, versions) if part)


def host_rows(seen: dict[str, Peer], live: list[Peer], abouts: dict[str, str] | None = None) -> list[HostRow]:
    """Per worker host: its worker processes busy now, tasks done, rate, the
    sources in progress, why it gets no work (its peers' problems) and
    what it runs on (``abouts``: host -> ``about``).
    ``seen`` keeps every session ever seen (a display keeps asking after
    peers leave), updated here."""
    seen.update((peer.session, peer) for peer in live)
    here = {peer.session for peer in live}
    busy = {peer.session for peer in live if peer.leases}
    hosts: dict[str, list[Peer]] = {}
    for peer in list(seen.values()):
        hosts.setdefault(peer.host, []).append(peer)
    now = time.monotonic()
    rows = []
    for host, peers in sorted(hosts.items()):
        current = [str(lease.entries[0].task.source) for p in peers if p.session in busy for lease in p.held()]
        rate = sum(p.finished / max((now if p.session in here else p.last_seen) - p.joined, 1e-9) for p in peers)
        done = sum(p.finished for p in peers)
        problem = "; ".join(dict.fromkeys(p.problem for p in peers if p.problem))
        busy_now = sum(p.session in busy for p in peers)
        rows.append(HostRow(host, busy_now, done, rate, current, problem, (abouts or {}).get(host, "")))
    return rows
