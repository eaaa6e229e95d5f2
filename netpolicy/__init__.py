"""The firewall and network of untrusted images (see planner.py for the policy).

    with netpolicy.untrusted_lease(conn, config, tag) as lease:   # before boot
        lease.mac, lease.ip, lease.network_name
        lease.check()   # right after boot, then every ~2 s; NetpolicyError: destroy the guest
    lease, release = netpolicy.acquire_untrusted(conn, config, tag)  # gc releases it
    netpolicy.gc_network(conn, config, is_alive)                  # racf-vm gc
    netpolicy.explain(config)                                     # racf-vm policy explain
"""

from .lease import Lease, acquire_untrusted, gc_network, untrusted_lease  # noqa: F401


def explain(config) -> list:
    """Lines describing the exact rules an untrusted image's jobs get on this host."""
    from . import (
        backend_nft,
        detect,
        guardplan,
        iptables_rules,
        lease,
        network,
        planner,
    )

    s = network.settings_from_config(config)
    rules = lease.example_plan(config)
    version = lease.base_version(rules)
    try:
        backend = detect.choose(config.untrusted_network.backend, detect.host_flavour())
        note = ""
    except Exception as exc:  # explain anyway, for both backends
        backend, note = None, f" ({getattr(exc, 'message', exc)})"
    out = [
        f"network:  libvirt network {s.name}: <forward mode='open'/>, bridge {s.bridge}, "
        f"{s.subnet} (host {s.host_ip}), DHCP reservations only, IPv6 off, isolated ports",
        f"per job:  a MAC in {network.MAC_PREFIX}:xx:xx:xx and an address reserved before boot, "
        "released after; rules tagged racf:<job tag>; the host's neighbour entry of the address "
        "pinned (permanent); the guest's bridge port pinned once plugged in (learning and "
        "flooding off, its MAC sticky); dnsmasq answers DHCP by broadcast only",
        "deny:     guests never reach " + (", ".join(s.deny) if s.deny else "(nothing listed)")
        + "; nor any address of the host but DHCP and DNS on " + s.host_ip,
        f"firewall backend: {backend or 'none usable on this host'}{note}",
        "rules (the job part shown for a sample job; its tag, MAC and address vary):",
    ]
    for rule in rules.all():
        out.append("  " + planner.describe(rule))
    out.append(f"routing guard (survives a firewall reload: unvetted guest packets, without mark "
               f"{s.mark:#x}, are neither forwarded nor delivered to the host's other addresses):")
    out += ["  " + line for line in guardplan.describe(guardplan.plan(s.spec))]
    if backend in (None, "nft"):
        out.append(f"as nftables (table {backend_nft.FAMILY} {backend_nft.TABLE}):")
        import json

        for cmd in backend_nft.skeleton_commands(s.bridge, rules.base, version) + backend_nft.job_commands(rules.job):
            out.append("  " + json.dumps(cmd, sort_keys=True))
    if backend in (None, "iptables"):
        out.append("as iptables (legacy, via python-iptables):")
        for spec in (iptables_rules.jump_specs(s.bridge, version)
                     + iptables_rules.skeleton_specs(s.bridge, rules.base, version)
                     + iptables_rules.job_specs(rules.job)):
            out.append("  " + spec.text())
        out.append("  (not expressible with legacy iptables: the post-NAT check; bridge isolation "
                   "comes from the network's isolated ports)")
    return out
