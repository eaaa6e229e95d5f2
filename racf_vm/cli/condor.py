"""``racf-vm condor-config``: the HTCondor configuration of this install, to paste or save."""

import os

import click

from racf_vm.condor import condorconfig


@click.command("condor-config")
@click.option("--access-point", is_flag=True,
              help="Print the access point's JobRouter route and hooks instead.")
@click.option("--partitionable-slot", is_flag=True,
              help="Add seed 000's single partitionable slot holding the whole machine.")
@click.option("--overprovision", "overprovision_cpus", type=int, default=1, show_default=True,
              help="With --partitionable-slot: advertise this many times the detected CPUs.")
@click.option("--overprovision-memory", type=int, default=1, show_default=True,
              help="With --partitionable-slot: advertise this many times the detected memory "
                   "(guests may then exhaust the host's RAM).")
@click.option("--default-hook", is_flag=True,
              help="Run the job hooks for every job without a HookKeyword of its own, not "
                   "only for jobs that set +HookKeyword = \"RACFVM\" (the keyword of [condor]).")
@click.pass_obj
def condor_config_command(obj, access_point, partitionable_slot, overprovision_cpus,
                          overprovision_memory, default_hook):
    """Print the HTCondor configuration for this node (for LOCAL_CONFIG_DIR)."""
    cfg = obj.config
    if access_point:
        sections = condorconfig.access_point_config(cfg)
        where = "the access point (schedd with the JobRouter)"
    else:
        options = condorconfig.NodeOptions(
            partitionable_slot=partitionable_slot, overprovision_cpus=overprovision_cpus,
            overprovision_memory=overprovision_memory, default_hook=default_hook)
        sections = condorconfig.execute_node_config(cfg, obj.config_path, options)
        where = "an execute node"
    header = (f"racf-vm configuration for {where}, printed by `racf-vm condor-config` from "
              f"{obj.config_path}.\nSave it in LOCAL_CONFIG_DIR (e.g. /etc/condor/config.d/"
              "50-racf-vm.conf), then condor_reconfig (condor_restart after slot or DAEMON_LIST "
              "changes).")
    click.echo(condorconfig.render(sections, header), nl=False)
    for path in condorconfig.tool_paths(sections, cfg.condor.libexec_dir):
        if not os.path.exists(path):
            click.echo(f"racf-vm: note: {path} does not exist on this host yet (make install; "
                       "or set [condor] libexec_dir)", err=True)
