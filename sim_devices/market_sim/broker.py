"""An MQTT 3.1.1 broker's state, as the market relies on it, in memory and without time.

The rules kept (OASIS MQTT 3.1.1, and Mosquitto where the standard leaves a choice):

- one retained message per topic; an empty retained payload clears it, and is still forwarded
  to the subscribers that are connected;
- a subscription is sent, flagged retained, every retained message its filter matches, each
  time it is made (also when it already existed); live messages go out with the flag cleared;
- a client hears what it publishes itself;
- a clean session starts empty and ends with its connection; a persistent one keeps its
  filters, and queues QoS 1 messages while its client is away (at most ``max_queued``, newer
  ones dropped and counted, as Mosquitto's ``max_queued_messages``), resent on reconnect;
- a connection that ends without DISCONNECT (lost, or taken over by a new connection with the
  same client id) publishes its last will;
- with an ACL (the field config, docs/brokers.md), a client publishes only on topics that name
  its own node; other publishes are dropped (counted), as Mosquitto does;
- a restart drops every connection without wills and keeps only what persistence saved at the
  last :meth:`Broker.save` (Mosquitto's ``autosave_interval``): retained messages cleared since
  come back, ones written since are gone; without persistence everything is gone.

Delivery timing, loss on the wire and duplicates are the network's business
(:mod:`sim_devices.market_sim.network`); this file answers each operation with the messages to
send, as ``(client, topic, payload, retained)``.
"""

from __future__ import annotations

import copy
import functools
from collections import Counter, deque
from dataclasses import dataclass, field

from protocols.market import topics

Out = tuple[str, str, bytes, bool]
"""A message for one client: (client, topic, payload, retained flag)."""


@functools.lru_cache(maxsize=1 << 16)
def matches(topic_filter: str, topic: str) -> bool:
    """Whether the MQTT ``topic_filter`` (``+``, ``#``) matches ``topic`` (remembered: every
    publish is matched against every session's filters, the same few pairs over and over)."""
    want, have = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or level not in ("+", have[i]):
            return False
    return len(want) == len(have)


@dataclass
class Session:
    clean: bool
    filters: list[str] = field(default_factory=list)  # in subscription order
    will: tuple[str, bytes] | None = None
    connected: bool = False
    queued: deque[tuple[str, bytes, bool]] = field(default_factory=deque)


class Broker:
    """Retained messages and sessions; every operation returns the messages it sends."""

    def __init__(self, *, acl: bool, persistence: bool, max_queued: int) -> None:
        self.acl = acl
        self.persistence = persistence
        self.max_queued = max_queued
        self.retained: dict[str, bytes] = {}
        self.sessions: dict[str, Session] = {}
        self.dropped: Counter[str] = Counter()
        """Messages the broker refused or dropped, by reason ("acl", "queue-full")."""
        self._saved: tuple[dict[str, bytes], dict[str, Session]] = ({}, {})

    # --- connections -----------------------------------------------------------------------------

    def connect(self, client: str, *, clean: bool, will: tuple[str, bytes] | None) -> list[Out]:
        """A new connection for ``client``: an old one still open is taken over (its will
        goes out); a persistent session resumes and its queue is sent."""
        out: list[Out] = []
        held = self.sessions.get(client)
        if held is not None and held.connected:
            out += self.lose(client)
            held = self.sessions.get(client)
        if clean or held is None or held.clean:
            held = self.sessions[client] = Session(clean=clean)
        held.connected, held.will = True, will
        while held.queued:
            topic, payload, retained = held.queued.popleft()
            out.append((client, topic, payload, retained))
        return out

    def lose(self, client: str) -> list[Out]:
        """``client``'s connection ended without DISCONNECT: its will is published."""
        held = self.sessions.get(client)
        if held is None or not held.connected:
            return []
        held.connected = False
        will, held.will = held.will, None
        if held.clean:
            del self.sessions[client]
        return [] if will is None else self.publish(client, will[0], will[1], retain=True)

    def requeue(self, client: str, topic: str, payload: bytes, retained: bool) -> None:
        """A message sent to a persistent session whose connection died before it arrived:
        unacknowledged, it is sent again when the client is back."""
        held = self.sessions.get(client)
        if held is not None and not held.clean:
            self._queue(held, topic, payload, retained)

    # --- messages --------------------------------------------------------------------------------

    def subscribe(self, client: str, topic_filter: str) -> list[Out]:
        held = self.sessions.get(client)
        if held is None or not held.connected:
            return []
        if topic_filter not in held.filters:
            held.filters.append(topic_filter)
        return [(client, topic, payload, True) for topic, payload in self.retained.items()
                if matches(topic_filter, topic)]

    def unsubscribe(self, client: str, topic_filter: str) -> None:
        held = self.sessions.get(client)
        if held is not None and topic_filter in held.filters:
            held.filters.remove(topic_filter)

    def publish(self, sender: str, topic: str, payload: bytes, *, retain: bool) -> list[Out]:
        if self.acl and not _own(sender, topic):
            self.dropped["acl"] += 1
            return []
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)
        out: list[Out] = []
        for client, held in self.sessions.items():
            if any(matches(f, topic) for f in held.filters):
                if held.connected:
                    out.append((client, topic, payload, False))
                else:
                    self._queue(held, topic, payload, False)
        return out

    def _queue(self, held: Session, topic: str, payload: bytes, retained: bool) -> None:
        if len(held.queued) >= self.max_queued:
            self.dropped["queue-full"] += 1
            return
        held.queued.append((topic, payload, retained))

    # --- persistence -----------------------------------------------------------------------------

    def save(self) -> None:
        """Persistence writes its snapshot (Mosquitto's autosave)."""
        if self.persistence:
            self._saved = (dict(self.retained), copy.deepcopy(self.sessions))

    def restart(self) -> None:
        """The broker process restarts: connections gone without wills, state as last saved."""
        retained, sessions = self._saved if self.persistence else ({}, {})
        self.retained = dict(retained)
        self.sessions = {client: held for client, held in copy.deepcopy(sessions).items()
                         if not held.clean}
        for held in self.sessions.values():
            held.connected, held.will = False, None


def _own(sender: str, topic: str) -> bool:
    """The field ACL: a node writes only topics that name it (``.../<kind>/[slot/]<node>``)."""
    try:
        parsed = topics.parse(topic)
    except topics.BadTopic:
        return False
    return parsed.node == sender and parsed.kind is not topics.Kind.REVOKED  # the authority's
