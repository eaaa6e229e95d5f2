"""``racf-vm gc``: remove what dead wrappers left behind (see racf_vm.job.gc)."""

import click


@click.command("gc")
@click.pass_obj
def gc_command(obj):
    """Remove domains and job directories whose wrapper is gone, and unneeded prepared layers."""
    from racf_vm.job import gc as gc_mod
    from racf_vm.vm import domain

    cfg = obj.config
    conn = domain.open_connection(cfg.libvirt.uri, cfg.timeouts.libvirt_connect)
    try:
        report = gc_mod.collect(conn, cfg.paths.state_dir, cfg)
    finally:
        conn.close()
    net = report.net
    click.echo(
        f"removed {len(report.domains)} domain(s), {len(report.job_dirs)} job dir(s), "
        f"{len(net.rules)} job rule set(s), {len(net.reservations)} reservation(s), "
        f"{len(net.neighbours)} pinned neighbour entr{'y' if len(net.neighbours) == 1 else 'ies'}, "
        f"{len(report.layers)} prepared layer(s), {len(report.site.removed)} site network reservation(s); "
        f"{len(report.kept) + len(net.kept)} still in use"
    )
