"""The master's workers as a display and the summary show them: one row
per host (data; the display draws it)."""

from __future__ import annotations

import time

from flac2all.cluster.peers import Peer
from flac2all.model import HostRow


def host_rows(seen: dict[str, Peer], live: list[Peer]) -> list[HostRow]:
    """Per worker host: its worker processes busy now, tasks done, rate, the
    sources in progress, and why it gets no work (its peers' problems).
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
        rows.append(HostRow(host, sum(p.session in busy for p in peers), done, rate, current, problem))
    return rows
