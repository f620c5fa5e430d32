"""A real network lab for end-to-end Happy Eyeballs scenarios (see ``tests/test_lab.py``).

Mocks prove the schedule; the lab proves it against real kernels, real SYNs and the C
library's real ``getaddrinfo``. The test run builds it and tears it down itself::

     client namespace hd-<pid>-c                     server namespace hd-<pid>-s
    +----------------------------+                  +------------------------------------+
    | client.py (happydial call) |                  | server.py: DNS on 192.0.2.53 and   |
    | 198.51.100.2               |                  |   2001:db8:53::53; TCP listeners   |
    | 2001:db8:c::2              |                  |   on the "live" pool addresses     |
    | routes to the server       |                  | pool on lo: 203.0.113.1-250,       |
    |   prefixes via hdc<pid>    |                  |   2001:db8:5::1-fa                 |
    +-------- hdc<pid> (TUN) ----+                  +------ hds<pid> (TUN) --------------+
                   |                                                |
                   +------------- relay.py (root namespace) --------+
                        per server address: forward, delay (RTT/2 each way) or drop

* **live**: a pool address with a listener; **refused**: a pool address without one (the
  kernel answers the SYN with a RST); **dead**: the relay drops its packets (``connect``
  hangs); **slow**: the relay holds its packets.
* DNS: ``/etc/netns/hd-<pid>-c/resolv.conf`` points the client at the lab's server, which
  answers per name and record type with its own delay, NXDOMAIN or an empty answer.
  ``nsswitch.conf`` and ``hosts`` are the lab's too (``ip netns exec`` bind-mounts them).
* Only documentation prefixes are used (2001:db8::/32, 192.0.2.0/24, 198.51.100.0/24,
  203.0.113.0/24); the namespaces have no other routes and the relay forwards nothing else.

Modules: :mod:`netns` builds and drives the lab (:class:`netns.Lab`); ``relay.py``,
``server.py`` and ``client.py`` are scripts it runs as child processes.
"""
